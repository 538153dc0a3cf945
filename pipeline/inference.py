"""Rule inference: what massive activations cost at inference (massive.inference.precision, quantize, window).

Reads the detection, the corpus (perplexity chunks: the first inference.max_chunks, the paper's
protocol) and the captured tokens (the first inference.num_sequences, traced for the super
weights), loads the model in inference.dtype (the reference: float32) and writes, in
results/<model>/<corpus>/inference/<config id>/:

  headroom.parquet      per block and format (inference.formats): the reference run's max |a|,
                        the format's limit, headroom, spacing at that magnitude, overflow and the
                        dims that would; and what the model run in that format measured there
                        (max finite |a|, inf and NaN, the first block with one): an overflow is
                        recorded, not an error
  quantization.parquet  perplexity in float, under each scheme of inference.schemes (activations
                        at every linear input, weights per output channel; massive entries or
                        super weights kept in float), as is and with the massive activations
                        set to their mean first; and the model run in each format
  window.parquet        perplexity with full attention, a sliding window of W tokens, + S sinks,
                        + the sinks' massive activations set to their mean or zeroed (empty when
                        the family's attention takes no 4-D mask: one line says so)
  summary.json, headroom.png, quantization.png
"""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig, open_dict

from massive.core.errors import NonFiniteError
from massive.core.results import InferenceTables
from massive.core.sequences import perplexity_chunks
from pipeline import cli, tracking
from pipeline.checks import seq_len
from pipeline.io import corpus_file, provenance, read_detection, read_table, read_token_ids, run_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    import torch

    from massive.inference import precision, quantize, window
    from massive.intervene.interventions import TokenRoles
    from massive.plots import figures as plots
    from pipeline.html import save_figure
    from pipeline.model import load_model, load_tokenizer, pick_device, protocol

    s = cfg.inference
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    found = read_detection(cfg)
    ids, seq_ids = read_token_ids(cfg, s.num_sequences)
    docs = read_table(corpus_file(cfg))["text"].tolist()
    tok = load_tokenizer(cfg)
    with open_dict(ref_cfg := cfg.copy()):
        ref_cfg.model.dtype = s.dtype.value
    model = load_model(ref_cfg, device)
    proto = protocol(cfg, tok)
    chunks = perplexity_chunks(tok, docs, seq_len(cfg), s.max_chunks, separator=cfg.tokenize.separator, protocol=proto)
    name, where = f"{cfg.model.name} on {cfg.data.name}", f"inference {cfg.model.name}/{cfg.data.name}"
    roles = TokenRoles(tok, list(cfg.detect.delimiters), bos=proto.bos)
    bs = s.batch_size
    ref = precision.measure(model, chunks, bs, device, where=where)
    if ref.perplexity is None:  # the reference itself must be finite
        raise NonFiniteError(f"{where}: the reference run ({ref.dtype}): {ref.note}")
    formats = [f.value for f in s.formats]
    runs = {fmt: precision.measure(precision.cast(model, fmt), chunks, bs, device, where=where) for fmt in formats}
    headroom = precision.headroom(ref, runs, formats)

    for fmt, r in runs.items():
        log.info(
            "%s in %s: first block with inf/NaN %s; perplexity %s %s",
            name,
            fmt,
            r.first_nonfinite,
            f"{r.perplexity:.4g}" if r.perplexity is not None else "not finite",
            r.note,
        )

    keep = {}
    if any(quantize.scheme(n).target == "weight" and quantize.scheme(n).keep for n in s.schemes):
        keep = quantize.superweights(model, ids, found, seq_ids, batch_size=bs, device=device)
        log.info("%s: super weight(s) kept in float: %s", name, keep)
    compared = dict(
        resamples=cfg.ablate.bootstrap,
        seed=cfg.seed,
        harmful_factor=cfg.ablate.harmful_factor,
        harmless_factor=cfg.ablate.harmless_factor,
    )
    quant = quantize.perplexities(
        model,
        chunks,
        list(s.schemes),
        found,
        roles_of=roles,
        keep=keep,
        with_mean=s.with_mean,
        batch_size=bs,
        device=device,
        baseline=ref.nll,
        where=where,
        **compared,
    )
    dtypes = precision.compared(ref, runs, where=f"{where}: the model in", **compared).rename(
        columns={"format": "scheme"}
    )
    dtypes = dtypes.assign(
        label=[f"the model in {f}" for f in dtypes["scheme"]], kind="dtype", massive="as is", keep=False
    )
    quant = pd.concat([quant, dtypes], ignore_index=True)[quantize.COLUMNS]
    quant.insert(0, "corpus", cfg.data.name)
    quant.insert(0, "model", cfg.model.name)

    skipped = window.probe(model, chunks, device)
    if skipped:
        log.info("%s: windowed attention skipped: %s", name, skipped)
        win = pd.DataFrame(columns=window.COLUMNS)
    else:
        win = window.perplexities(
            model,
            chunks,
            found,
            list(s.windows),
            list(s.sinks),
            list(s.sink_interventions),
            roles_of=roles,
            batch_size=bs,
            device=device,
            full=ref.nll,
            where=where,
            **compared,
        )
        log.info(
            "%s: %s",
            name,
            "; ".join(
                f"{v} W={w} S={k} {p:.4g}"
                for v, w, k, p in zip(win["variant"], win["window"], win["sinks"], win["perplexity"])
            ),
        )
    summary = {
        "model": cfg.model.name,
        "corpus": cfg.data.name,
        "dtype": ref.dtype,
        "perplexity": ref.perplexity,
        "n_chunks": len(chunks),
        "seq_len": int(chunks.shape[1]),
        "headroom": precision.summary(headroom, runs),
        "window_skipped": skipped,
        "superweights_kept": {k: [list(i) for i in v] for k, v in keep.items()},
    }

    out = lambda f: run_dir(cfg, "inference") / f  # noqa: E731
    InferenceTables(headroom=headroom, quantization=quant, window=win, result=summary).save(
        run_dir(cfg, "inference"), meta=provenance(cfg)
    )
    save_figure(
        plots.headroom(headroom, f"{name}: max |a| per block against float16 and bfloat16"),
        out("headroom.png"),
        cfg.figures.dpi,
    )
    save_figure(
        plots.quantization(quant, f"{name}: perplexity per quantization configuration"),
        out("quantization.png"),
        cfg.figures.dpi,
    )
    log.info(
        "%s: perplexity %s",
        name,
        ", ".join(
            f"{k} ({m}) {v:.4g}"
            for k, m, v in zip(quant["scheme"], quant["massive"], quant["perplexity"].fillna(float("nan")))
        ),
    )
    with tracking.stage_run(cfg) as wb:
        wb.summary.update(
            {f"perplexity/{k}/{m}": v for k, m, v in zip(quant["scheme"], quant["massive"], quant["perplexity"])}
        )
        wb.summary.update({f"headroom/{fmt}/{k}": v for fmt, h in summary["headroom"].items() for k, v in h.items()})
        wb.summary.update(
            {
                f"window/{v}/" + ("full" if pd.isna(w) else f"W{w}/S{k}"): p
                for v, w, k, p in zip(win["variant"], win["window"], win["sinks"], win["perplexity"])
            }
        )
        wb.summary.update({"window_skipped": skipped or "", "superweights_kept": str(keep)})
        wb.log(
            {
                "headroom": tracking.table(headroom.astype(object).where(headroom.notna(), None)),
                "quantization": tracking.table(quant.astype(object).where(quant.notna(), None)),
                "window": tracking.table(win.astype(object).where(win.notna(), None)),
                "headroom_figure": tracking.image(out("headroom.png")),
                "quantization_figure": tracking.image(out("quantization.png")),
            }
        )


if __name__ == "__main__":
    cli.main("inference", run)
