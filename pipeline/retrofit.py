"""Rule retrofit: can an explicit attention bias stand in for the massive activations of a pretrained model?

The massive activations are zeroed at and after the block where they emerge (the sustained ablation
of ablate.layers=from_emerge, targets from the detection), and each variant of massive/retrain/retrofit.py
is trained on top of the frozen model, its own parameters only, with AdamW on training chunks of the
corpus. Held-out chunks (the corpus's first retrofit.eval_chunks chunks, disjoint from the
retrofit.train_chunks that follow them) measure the recovery. The arms:

  none            the ablation, no training (what rule ablate measures)
  <variant>       a variant trained with the massive activations ablated (retrofit.variants;
                  softmax_plus_one has no parameters and is evaluated untrained; mlp_bias is the
                  parameter-matched control: as many parameters as value_bias, no attention change)
  <variant>@kept  a variant trained with the massive activations kept (retrofit.kept): what
                  training alone moves

Output, in results/<model>/<corpus>/retrofit/:
  curves.parquet   per arm and evaluation step: perplexity, ratio to the intact model with its paired
                   bootstrap interval over the held-out chunks, trained parameters, training loss
  layers.parquet   per arm and block, at the last step: attention share of the first token and of the
                   extra slot (k'/v' slot, sink, +1), the first token's hidden-state norm, the intact's
  summary.parquet  per arm: the final ratio and interval, and the ratio with the massive activations
                   set back (no ablation) and the trained bias in place
  recovery.png     ratio to intact against the training step, one line per arm
With retrofit.seeds, every arm is trained once per seed (a `seed` column in every table; the report reads
the median over seeds and shows their range). Training resumes from each arm's checkpoint
(.checkpoints/<arm>@seed<seed>.pt beside the tables); a checkpoint
made with other settings is a one-line error.
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from massive.core.errors import MassiveError
from massive.core.results import RetrofitTables
from massive.core.sequences import perplexity_chunks
from pipeline import cli, tracking
from pipeline.config import RETROFIT_FIXED
from pipeline.io import corpus_file, provenance, read_detection, read_table, run_dir


def arms(cfg: DictConfig) -> list[tuple[str, str | None, bool]]:
    """(arm, variant or None, ablated) in order: none, each variant, each kept variant."""
    return [
        ("none", None, True),
        *((v, v, True) for v in cfg.retrofit.variants),
        *((f"{v}@kept", v, False) for v in cfg.retrofit.kept),
    ]


def training_keys() -> list[str]:
    """The retrofit.* keys that are massive.retrain.retrofit.RetrofitConfig's (all of its fields but RETROFIT_FIXED)."""
    from massive.retrain import retrofit as R

    return [f.name for f in fields(R.RetrofitConfig) if f.name not in RETROFIT_FIXED]


def run(cfg: DictConfig) -> None:
    from massive.core import arch
    from massive.intervene import interventions
    from massive.plots import figures as plots
    from massive.retrain import retrofit as R
    from pipeline.html import save_figure
    from pipeline.model import intervene, load_model, load_tokenizer, pick_device, protocol

    c, name = cfg.retrofit, f"retrofit {cfg.model.name}/{cfg.data.name}"
    tok = load_tokenizer(cfg)
    model = load_model(cfg, pick_device(cfg.capture.device))
    n_layers = arch.num_layers(model.config)
    found = interventions.targets(read_detection(cfg), "from_emerge", n_layers)
    if not found.layers:
        raise MassiveError(f"{name}: detection found no massive activations to ablate")
    proto = protocol(cfg, tok)
    chunks = perplexity_chunks(
        tok,
        read_table(corpus_file(cfg))["text"].tolist(),
        c.seq_len,
        c.eval_chunks + c.train_chunks,
        separator=cfg.tokenize.separator,
        protocol=proto,
    )
    if len(chunks) < c.eval_chunks + 2:
        raise MassiveError(
            f"{name}: the corpus gives {len(chunks)} chunks of {c.seq_len} tokens, too few for "
            f"retrofit.eval_chunks={c.eval_chunks} held out and training chunks after them"
        )
    held, train = chunks[: c.eval_chunks], chunks[c.eval_chunks :]
    ablate = lambda: intervene(cfg, model, found, "zero")
    seeds = list(c.seeds) or [cfg.seed]
    intact = R.evaluate(model, None, held, None, c.batch_size, where=f"{name}: the intact model")
    out = run_dir(cfg, "retrofit")
    (out / ".checkpoints").mkdir(parents=True, exist_ok=True)
    stamp = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": cfg.data.name,
        "protocol": proto.name,
        "blocks": found.layers,
        "dims": found.dims,
        "seq_len": c.seq_len,
        "eval_chunks": c.eval_chunks,
    }
    base = dict(
        model=cfg.model.name,
        corpus=cfg.data.name,
        protocol=proto.name,
        blocks=",".join(map(str, found.layers)),
        dims=",".join(map(str, found.dims)),
        seq_len=c.seq_len,
        eval_chunks=f"0-{c.eval_chunks - 1}",
        train_chunks=f"{c.eval_chunks}-{len(chunks) - 1}",
    )
    curves, layers, summary = [], [], []
    for seed in seeds:
        train_cfg = R.RetrofitConfig(seed=seed, **{k: c[k] for k in training_keys()})
        for arm_name, variant, ablated in arms(cfg):
            arm = R.run_arm(
                model,
                arm_name,
                variant,
                ablate if ablated else None,
                train,
                held,
                intact,
                train_cfg,
                c.bootstrap,
                checkpoint=out / ".checkpoints" / f"{arm_name}@seed{seed}.pt",
                stamp=stamp,
                where=name,
            )
            head = {
                **base,
                "seed": seed,
                "arm": arm.name,
                "variant": arm.variant,
                "massive": "ablated" if arm.ablated else "kept",
                "params": arm.params,
            }
            curves += [{**head, **row} for row in arm.curve]
            layers += [
                {
                    **head,
                    "layer": layer,
                    "first_share": arm.final.shares[layer][0],
                    "slot_share": arm.final.shares[layer][1],
                    "first_norm": arm.final.norms[layer],
                    "intact_first_share": intact.shares[layer][0],
                    "intact_first_norm": intact.norms[layer],
                }
                for layer in range(n_layers)
            ]
            summary.append(
                {
                    **head,
                    **{k: v for k, v in arm.curve[-1].items() if k != "train_loss"},
                    "ratio_set_back": arm.set_back.ratio,
                    "set_back_lo": arm.set_back.ratio_lo,
                    "set_back_hi": arm.set_back.ratio_hi,
                }
            )
    curves, layers, summary = pd.DataFrame(curves), pd.DataFrame(layers), pd.DataFrame(summary)
    RetrofitTables(curves=curves, layers=layers, summary=summary).save(out, meta=provenance(cfg))
    save_figure(
        plots.retrofit_curves(curves, f"{cfg.model.name} / {cfg.data.name}: the ablation with a retrofit"),
        out / "recovery.png",
        cfg.figures.dpi,
    )
    with tracking.stage_run(cfg, name=f"retrofit/{cfg.model.name}/{cfg.data.name}") as wb:
        wb.log({"curves": tracking.table(curves), "summary": tracking.table(summary)})


if __name__ == "__main__":
    cli.main("retrofit", run)
