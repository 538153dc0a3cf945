"""Rule attention: attention sinks, the implicit attention bias, and its causal test.

The science is massive.measure.attention (read its docstring for the recording attention function and
the interventions); this rule reads the capture's tokens and the detection, calls it with the
values of cfg.attention, and writes, in results/<model>/<corpus>/attention/:

  heads.parquet          (layer, head): mean attention that queries at positions >= 1 put on
                         the first token, on the massive tokens, on the rest; sink (Sink_1 head:
                         mass on the first token > sink_threshold, Gu et al. 2024)
  layers.parquet         per layer: head means of the above, the Sink_1 share of heads, whether
                         the layer's input holds massive activations, top-1 |a| / median |a|
  decomposition.parquet  (layer, head, part in massive|other|random): how constant the part is
                         across sequences at the same query position: rel_std (RMS deviation
                         from the mean / RMS norm of the mean) and cos_to_mean
  perplexity.parquet     variant none | massive_mean | random_mean | other_mean | massive_zero: perplexity,
                         ratio to none with its 95% interval and verdict (massive.compare)
  heatmaps.png           head-mean attention logits for capture.prompt at a few layers (Fig. 5)
  sink_curve.png         per-layer attention on the massive tokens next to top-1 / median |a|
  summary.json           concentration layer, Sink_1 share, perplexities, decomposition medians
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields

from omegaconf import DictConfig, OmegaConf

from massive.core.errors import MassiveError
from massive.core.results import AttentionTables
from massive.core.sequences import encode_prompt, perplexity_chunks
from pipeline import cli, tracking
from pipeline.checks import seq_len
from pipeline.config import AttentionConfig
from pipeline.io import corpus_file, provenance, read_detection, read_table, read_token_ids, run_dir

log = logging.getLogger(__name__)


def settings(cfg: DictConfig) -> AttentionConfig:
    """cfg.attention over the defaults (`++attention.key=value` works with or without it in the schema)."""
    node = cfg.get("attention") if "attention" in cfg else None
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    known = {f.name for f in fields(AttentionConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MassiveError(f"unknown key attention.{unknown[0]} (known: {', '.join(sorted(known))})")
    s = AttentionConfig(**values)
    if s.num_sequences < 1:
        raise MassiveError(f"attention.num_sequences={s.num_sequences} must be at least 1")
    if s.intervene_layers not in ("massive", "all"):
        raise MassiveError(f"attention.intervene_layers={s.intervene_layers!r} is not 'massive' or 'all'")
    return s


def run(cfg: DictConfig) -> None:
    import torch

    from massive.measure import attention
    from massive.plots import figures as plots
    from pipeline.html import save_figure
    from pipeline.model import load_model, load_tokenizer, pick_device, protocol

    s = settings(cfg)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    found = read_detection(cfg)
    massive, dims = found.massive, found.dims
    emerge = found.emerge_layer if found.found else None
    ids, seq_ids = read_token_ids(cfg, s.num_sequences)
    stats_path = run_dir(cfg, "capture") / "layer_stats.parquet"
    layer_stats = read_table(stats_path) if stats_path.exists() else None

    attention.register()
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device, attn_implementation=attention.IMPLEMENTATION)
    name = f"{cfg.model.name} on {cfg.data.name}"
    res = attention.analyse(
        model,
        ids,
        massive,
        emerge=emerge,
        layer_stats=layer_stats,
        seq_ids=seq_ids,
        sink_threshold=s.sink_threshold,
        concentrate_threshold=s.concentrate_threshold,
        sample_queries=s.sample_queries,
        seed=cfg.seed,
        batch_size=cfg.capture.batch_size,
        device=device,
        desc=f"attention {cfg.model.name}/{cfg.data.name}",
    )

    proto = protocol(cfg, tok)
    prompt_ids = encode_prompt(tok, cfg.capture.prompt, protocol=proto)
    kept = attention.prompt_logits(model, prompt_ids, device)
    hm_layers = attention.heatmap_layers(emerge, res.recorder.n_layers, s.heatmap_layers)
    figs = {
        "heatmaps": plots.heatmaps(
            kept,
            hm_layers,
            [tok.decode([int(i)]) for i in prompt_ids[0]],
            emerge,
            f"{cfg.model.name}: {cfg.capture.prompt!r}",
        ),
        "sink_curve": plots.sink_curve(res.layers, emerge, res.concentration, name),
    }

    docs = read_table(corpus_file(cfg))["text"].tolist()
    chunks = perplexity_chunks(
        tok, docs, seq_len(cfg), cfg.ablate.max_chunks, separator=cfg.tokenize.separator, protocol=proto
    )
    ppl_table = attention.intervention_perplexities(
        model,
        chunks,
        res,
        dims,
        cfg.detect.min_abs,
        cfg.detect.min_ratio,
        s.intervene_layers,
        cfg.ablate.batch_size,
        device,
        resamples=cfg.ablate.bootstrap,
        seed=cfg.seed,
        harmful_factor=cfg.ablate.harmful_factor,
        harmless_factor=cfg.ablate.harmless_factor,
    )

    out = run_dir(cfg, "attention")
    for key, fig in figs.items():
        save_figure(fig, out / f"{key}.png", cfg.figures.dpi)
    ppl = attention.perplexity_summary(ppl_table)
    summary = {
        "model": cfg.model.name,
        "corpus": cfg.data.name,
        **proto.record(),
        "settings": asdict(s),
        "massive_tokens": "detected" if len(massive) else "first token (none detected)",
        **res.summary,
        "heatmap_layers": hm_layers,
        **ppl,
    }
    AttentionTables(
        heads=res.heads, layers=res.layers, decomposition=res.decomposition, perplexity=ppl_table, result=summary
    ).save(out, meta=provenance(cfg))
    log.info(
        "%s: attention concentrates from layer %s; Sink_1 share %.2f%s; perplexity %s",
        name,
        res.concentration,
        summary["sink_1_share"],
        f"; learned sink share {summary['mass_sink_mean']:.3f}" if summary["explicit_sink"] else "",
        ", ".join(f"{k} {v:.3f}" for k, v in ppl["perplexity"].items()),
    )
    for note in summary["skipped_layers"].values():
        log.info("%s: %s", name, note)
    with tracking.stage_run(cfg) as wb:
        for _, row in res.layers.iterrows():
            wb.log(
                {
                    "layer": int(row.layer),
                    "mass_first": row.mass_first,
                    "mass_massive": row.mass_massive,
                    "mass_sink": row.mass_sink,
                    "sink_1_share": row.sink_1_share,
                }
            )
        wb.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and v is not None})
        wb.summary.update({f"perplexity/{k}": v for k, v in ppl["perplexity"].items()})
        wb.log(
            {
                "heads": tracking.table(res.heads),
                "decomposition": tracking.table(res.decomposition),
                "perplexity": tracking.table(ppl_table),
                **{key: tracking.image(out / f"{key}.png") for key in figs},
            }
        )


if __name__ == "__main__":
    cli.main("attention", run)
