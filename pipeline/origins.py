"""Rule origins: where the massive activations come from, and the super weight behind them.

The science is massive.measure.origins (read its docstring); this rule reads the captured tokens (the
first origins.num_sequences) and the detection, traces every massive activation at the tokens
where detection found it, and measures perplexity (the first origins.max_chunks chunks, the
paper's protocol) under each weight intervention of origins.interventions. It writes, in
results/<model>/<corpus>/origins/<config id>/:

  sublayers.parquet     per massive activation (dim, role): the writing block's attention, MLP
                        (and unexplained) contribution, and every later block whose part changes
                        it by more than origins.min_share of its value (massive.measure.origins.SUBLAYER_COLUMNS)
  superweights.parquet  the down-projection input channels that write it and their weights
                        W[dim, channel] in the model's own orientation (value, magnitude rank; the
                        expert, for a mixture of experts): SUPERWEIGHT_COLUMNS
  perplexity.parquet    one row per weight intervention: kind, edited coordinates, perplexity, ratio to
                        none with its 95% interval and verdict (massive.compare; ablate.bootstrap,
                        ablate.harmful_factor, ablate.harmless_factor)
  contributions.png     each block's contribution to the massive dim at its token
"""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig

from massive.core.results import OriginsTables
from massive.core.sequences import perplexity_chunks
from pipeline import cli, tracking
from pipeline.checks import seq_len
from pipeline.io import corpus_file, provenance, read_detection, read_table, read_token_ids, run_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    import torch

    from massive.intervene.interventions import TokenRoles
    from massive.measure import origins
    from massive.plots import figures as plots
    from pipeline.html import save_figure
    from pipeline.model import load_model, load_tokenizer, pick_device, protocol

    s = cfg.origins
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    found = read_detection(cfg)
    ids, seq_ids = read_token_ids(cfg, s.num_sequences)
    docs = read_table(corpus_file(cfg))["text"].tolist()
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    proto = protocol(cfg, tok)
    chunks = perplexity_chunks(tok, docs, seq_len(cfg), s.max_chunks, separator=cfg.tokenize.separator, protocol=proto)

    o = origins.find(
        model,
        ids,
        found,
        seq_ids=seq_ids,
        min_share=s.min_share,
        channel_share=s.channel_share,
        max_channels=s.max_channels,
        batch_size=s.batch_size,
        device=device,
    )
    name = f"{cfg.model.name} on {cfg.data.name}"
    ppl = origins.perplexities(
        model,
        o,
        chunks,
        list(s.interventions),
        seed=cfg.seed,
        rank_band=s.rank_band,
        batch_size=s.batch_size,
        device=device,
        roles_of=TokenRoles(tok, list(cfg.detect.delimiters), bos=proto.bos),
        resamples=cfg.ablate.bootstrap,
        harmful_factor=cfg.ablate.harmful_factor,
        harmless_factor=cfg.ablate.harmless_factor,
        where=f"origins {cfg.model.name}/{cfg.data.name}",
    )
    ppl.insert(0, "corpus", cfg.data.name)
    ppl.insert(0, "model", cfg.model.name)

    out = lambda f: run_dir(cfg, "origins") / f  # noqa: E731
    OriginsTables(sublayers=o.sublayers, superweights=o.superweights, perplexity=ppl).save(
        run_dir(cfg, "origins"), meta=provenance(cfg)
    )
    save_figure(
        plots.contributions(o.contributions, f"{name}: contribution to the massive dim at its token"),
        out("contributions.png"),
        cfg.figures.dpi,
    )
    if o.note:
        log.warning("%s: no 'other' part in the sublayer table: %s", name, o.note)
    for _, r in o.primary.iterrows():
        log.info(
            "%s: dim %d (%s) written by block %d's MLP%s; super weight %s %s = %.4g (|w| rank %d of %d)",
            name,
            r["dim"],
            r["role"],
            r["block"],
            "" if pd.isna(r["expert"]) else f" (expert {r['expert']})",
            r["param"],
            r["coordinate"],
            r["weight"],
            r["abs_rank"],
            r["n_weights"],
        )
    log.info(
        "%s: perplexity %s", name, ", ".join(f"{k} {v:.4g}" for k, v in zip(ppl["intervention"], ppl["perplexity"]))
    )
    with tracking.stage_run(cfg) as wb:
        wb.summary.update({f"perplexity/{k}": v for k, v in zip(ppl["intervention"], ppl["perplexity"])})
        wb.summary.update({"n_superweights": len(o.primary), "n_activations": len(o.writers)})
        sw = o.superweights.assign(expert=o.superweights["expert"].astype("float"))  # W&B tables take no pd.NA
        wb.log(
            {
                "sublayers": tracking.table(o.sublayers),
                "superweights": tracking.table(sw),
                "perplexity": tracking.table(ppl),
                "contributions": tracking.image(out("contributions.png")),
            }
        )


if __name__ == "__main__":
    cli.main("origins", run)
