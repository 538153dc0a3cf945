"""Rule retrofit: can an explicit attention bias stand in for the massive activations of a pretrained model?

The massive activations are zeroed at and after the block where they emerge (the sustained ablation
of ablate.layers=from_emerge, targets from the detection), and each variant of massive/retrofit.py
is trained on top of the frozen model, its own parameters only, with AdamW on training chunks of the
corpus. Held-out chunks (the corpus's first retrofit.eval_chunks chunks, disjoint from the
retrofit.train_chunks that follow them) measure the recovery. The arms:

  none            the ablation, no training (what rule ablate measures)
  <variant>       a variant trained with the massive activations ablated (retrofit.variants;
                  softmax_plus_one has no parameters and is evaluated untrained)
  <variant>@kept  a variant trained with the massive activations kept (retrofit.kept): what
                  training alone moves
  mlp_bias        the parameter-matched control (as many parameters as value_bias, no attention change)

Output, in results/<model>/<corpus>/retrofit/:
  curves.parquet   per arm and evaluation step: perplexity, ratio to the intact model with its paired
                   bootstrap interval over held-out chunks, params, train loss
  layers.parquet   per arm and block, at the last step: attention share of the first token and of the
                   extra slot (k'/v' slot, sink, +1), the first token's hidden-state norm
  summary.parquet  per arm: the final ratio and interval, and the ratio with the massive activations
                   set back (no ablation) with the trained bias in place
  recovery.png     ratio to intact against the training step, one line per arm
Training is resumable: each arm checkpoints under the run folder's .checkpoints/ (config-stamped).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from massive import ablation, arch, interventions, plots
from massive import retrofit as R
from massive.errors import MassiveError
from massive.sequences import perplexity_chunks
from pipeline import cli, tracking
from pipeline.html import save_figure
from pipeline.io import corpus_file, read_detection, read_table, run_dir, write_table
from pipeline.model import load_model, load_tokenizer, pick_device, protocol


def arms(cfg: DictConfig) -> list[tuple[str, str | None, bool]]:
    """(arm, variant or None, ablated) in order: none, each variant, each kept variant."""
    out = [("none", None, True)]
    out += [(v, v, True) for v in cfg.retrofit.variants]
    out += [(f"{v}@kept", v, False) for v in cfg.retrofit.kept]
    return out


def run(cfg: DictConfig) -> None:
    c = cfg.retrofit
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    n_layers = arch.num_layers(model.config)
    found = interventions.targets(read_detection(cfg), "from_emerge", n_layers)
    if not found.layers:
        raise MassiveError(f"retrofit {cfg.model.name}/{cfg.data.name}: detection found no massive activations to ablate")
    docs = read_table(corpus_file(cfg))["text"].tolist()
    proto = protocol(cfg, tok)
    chunks = perplexity_chunks(tok, docs, c.seq_len, c.eval_chunks + c.train_chunks, separator=cfg.tokenize.separator,
                               protocol=proto)
    if len(chunks) < c.eval_chunks + 2:
        raise MassiveError(f"retrofit: the corpus gives {len(chunks)} chunks of {c.seq_len} tokens, too few for "
                           f"retrofit.eval_chunks={c.eval_chunks} held out plus training chunks")
    held, train = chunks[: c.eval_chunks], chunks[c.eval_chunks :]
    ablate = lambda: interventions.intervene(model, found, "zero", seed=cfg.seed, min_abs=cfg.detect.min_abs,  # noqa: E731
                                             min_ratio=cfg.detect.min_ratio)
    name = f"retrofit {cfg.model.name}/{cfg.data.name}"
    intact = R.evaluate(model, None, held, None, c.batch_size, where=f"{name}: the intact model")
    out = run_dir(cfg, "retrofit")
    ckpt_dir = out / ".checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp = OmegaConf.to_container(c, resolve=True) | {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed,
                                                        "protocol": proto.name}
    base = dict(model=cfg.model.name, corpus=cfg.data.name, protocol=proto.name, blocks=",".join(map(str, found.layers)),
                dims=",".join(map(str, found.dims)), eval_chunks=f"0-{c.eval_chunks - 1}",
                train_chunks=f"{c.eval_chunks}-{len(chunks) - 1}", seq_len=c.seq_len)
    curves, layers, summary = [], [], []
    for arm, variant, ablated in arms(cfg):
        rf = R.Retrofit(model.config, variant, init_logit=c.init_logit, seed=cfg.seed) if variant else None
        abl = ablate if ablated else None
        train_cfg = R.RetrofitConfig(steps=c.steps, batch_size=c.batch_size, lr=c.lr, logit_lr=c.logit_lr,
                                     init_logit=c.init_logit, seed=cfg.seed, eval_every=c.eval_every)
        losses: dict[int, float] = {}

        def on_eval(step: int, rf=rf, abl=abl, arm=arm) -> None:
            ev = R.evaluate(model, rf, held, abl, c.batch_size, where=f"{name}: arm {arm!r} at step {step}")
            ci = ablation.ratio_interval(ev.nll, intact.nll, c.bootstrap, cfg.seed, where=f"{name}: arm {arm!r}")
            curves.append({**base, "arm": arm, "variant": variant or "none", "massive": "ablated" if abl else "kept",
                           "params": rf.n_params if rf else 0, "step": step, "perplexity": ci.perplexity,
                           "ratio_to_intact": ci.ratio, "ratio_lo": ci.ratio_lo, "ratio_hi": ci.ratio_hi})
            last[arm] = ev

        last: dict[str, R.Evaluation] = {}
        if rf is None:
            on_eval(0)
        else:
            path = ckpt_dir / f"{arm}.pt"
            _check_stamp(path, stamp)
            state = R.fit(model, rf, train, train_cfg, ablation=abl, checkpoint=path, on_eval=on_eval, where=name)
            losses = dict(enumerate(state.losses, 1))
            if arm not in last:  # resumed past the last evaluation: evaluate the final state once
                on_eval(state.step)
        for row in curves:
            if row["arm"] == arm:
                row["train_loss"] = losses.get(row["step"], float("nan")) if row["step"] else float("nan")
        ev = last[arm]
        for layer in range(n_layers):
            first, slot = ev.shares.get(layer, (float("nan"), float("nan")))
            layers.append({**base, "arm": arm, "layer": layer, "first_share": first, "slot_share": slot,
                           "first_norm": ev.norms[layer], "intact_first_share": intact.shares[layer][0],
                           "intact_first_norm": intact.norms[layer]})
        final = curves[-1]
        restored = R.evaluate(model, rf, held, None, c.batch_size, where=f"{name}: arm {arm!r}, massive set back")
        back = ablation.ratio_interval(restored.nll, intact.nll, c.bootstrap, cfg.seed, where=f"{name}: arm {arm!r} set back")
        summary.append({**base, **{k: final[k] for k in ("arm", "variant", "massive", "params", "step", "perplexity",
                                                        "ratio_to_intact", "ratio_lo", "ratio_hi")},
                        "ratio_set_back": back.ratio, "set_back_lo": back.ratio_lo, "set_back_hi": back.ratio_hi})
    curves, layers, summary = pd.DataFrame(curves), pd.DataFrame(layers), pd.DataFrame(summary)
    write_table(curves, out / "curves.parquet", cfg)
    write_table(layers, out / "layers.parquet", cfg)
    write_table(summary, out / "summary.parquet", cfg)
    save_figure(plots.retrofit_curves(curves, f"{cfg.model.name} / {cfg.data.name}: the ablation with a retrofit"),
                out / "recovery.png", cfg.figures.dpi)
    with tracking.stage_run(cfg, name=f"retrofit/{cfg.model.name}/{cfg.data.name}") as wb:
        wb.log({"curves": tracking.table(curves), "summary": tracking.table(summary)})


def _check_stamp(path: Path, stamp: dict) -> None:
    """A checkpoint made with other settings is an error, never a silent resume."""
    meta = path.with_suffix(".json")
    import json

    if path.exists():
        saved = json.loads(meta.read_text()) if meta.exists() else None
        if saved != stamp:
            raise MassiveError(f"retrofit: the checkpoint {path} was made with other settings; delete it or "
                               "change the run's name (its settings: " + meta.name + ")")
    else:
        meta.write_text(json.dumps(stamp, sort_keys=True))


if __name__ == "__main__":
    cli.main("retrofit", run)
