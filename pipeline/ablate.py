"""Rule ablate: perplexity of one model on one corpus under each intervention.

The paper's causal test: massive activations act as fixed biases, so setting them to zero
breaks the model while setting them to their mean changes nothing, and zeroing as many ordinary
activations (the control) changes nothing either. The model is loaded once and serves every
intervention in ablate.interventions (massive/intervene/interventions.py), applied at the blocks named by
ablate.layers: `emerge` (the block where detection saw them appear; the default), `from_emerge`
(that block and every later one), `all`, or a list of block indices (e.g. `ablate.layers=[2,3]`;
"2_3" in paths and tables).

Perplexity follows the paper (massive.core.sequences.perplexity_chunks, massive.perplexity): the
corpus's documents in order joined by tokenize.separator, tokenised, cut into non-overlapping
seq_len chunks (the first ablate.max_chunks), PPL = exp(mean cross-entropy over every predicted
token; each chunk begins as model.bos says, made by the same function as tokenize's sequences).
The interventions are the conditions of massive.compare: each chunk's mean NLL is kept
(chunk_nll), paired with the baseline's (none) on the same chunks; a seeded bootstrap
(ablate.bootstrap resamples, seed) gives the 95% intervals of each perplexity and of its ratio to
none, and the verdict (ablate.harmful_factor, ablate.harmless_factor). While each intervention runs, the massive entries
of its first block are followed downstream (massive.measure.regrowth). A non-finite loss (float16
overflow) is a one-line error and writes nothing. Output, in results/<model>/<corpus>/ablate/<layers>/:
  perplexity.parquet  one row per intervention: perplexity, ratio (to none), their intervals, verdict,
                      chunk_nll
  regrowth.parquet    one row per intervention and block from the first intervened one: the mean
                      |a| of the targeted entries, the block's top-1 and median |a|, share of none's
"""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
from omegaconf import DictConfig

from massive.core.errors import MassiveError
from massive.core.results import AblateTables
from massive.core.sequences import perplexity_chunks
from massive.intervene import comparison
from pipeline import cli, tracking
from pipeline.checks import seq_len
from pipeline.config import layers_slug, layers_spec
from pipeline.io import corpus_file, provenance, read_detection, read_table, run_dir


def run(cfg: DictConfig) -> None:
    from massive.core import arch
    from massive.intervene import interventions
    from massive.measure import regrowth
    from pipeline.model import intervene, load_model, load_tokenizer, pick_device, protocol

    if "none" not in cfg.ablate.interventions:
        raise MassiveError("ablate.interventions must include 'none': the baseline every ratio is measured against")
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    found = interventions.targets(read_detection(cfg), layers_spec(cfg.ablate.layers), arch.num_layers(model.config))
    docs = read_table(corpus_file(cfg))["text"].tolist()
    proto = protocol(cfg, tok)
    chunks = perplexity_chunks(
        tok, docs, seq_len(cfg), cfg.ablate.max_chunks, separator=cfg.tokenize.separator, protocol=proto
    )
    roles = interventions.TokenRoles(tok, list(cfg.detect.delimiters), bos=proto.bos)
    slug, blocks = layers_slug(cfg.ablate.layers), ",".join(map(str, found.layers))

    recorders, first = {}, min(found.layers, default=None)

    def condition(name: str):
        @contextmanager
        def applied():
            with (
                intervene(cfg, model, found, name, tok, roles_of=roles) as ctx,
                regrowth.recording(model, ctx, first) as recorders[name],
            ):
                yield ctx

        return applied

    cmp = comparison.compare(
        model,
        chunks,
        {name: condition(name) for name in cfg.ablate.interventions},
        baseline="none",
        resamples=cfg.ablate.bootstrap,
        seed=cfg.seed,
        harmful_factor=cfg.ablate.harmful_factor,
        harmless_factor=cfg.ablate.harmless_factor,
        batch_size=cfg.ablate.batch_size,
        device=device,
        where=f"ablate {cfg.model.name}/{cfg.data.name}: intervention {{}} at blocks {blocks or '(none)'}",
        progress=True,
    )
    rows = [
        {
            "model": cfg.model.name,
            "corpus": cfg.data.name,
            "protocol": proto.name,
            "intervention": name,
            "layers": slug,
            "blocks": blocks,
            "dims": ",".join(map(str, found.dims)),
            "entries_changed": cmp.contexts[name].changed,
            **{k: v for k, v in cmp.row(name).items() if k != "note"},
            "chunk_nll": cmp.nll[name].tolist(),
        }
        for name in cfg.ablate.interventions
    ]
    table = pd.DataFrame(rows)
    regrow = regrowth.table(recorders)
    for at, column, value in ((0, "model", cfg.model.name), (1, "corpus", cfg.data.name), (2, "layers", slug)):
        regrow.insert(at, column, value)
    out = run_dir(cfg, "ablate")  # results/<model>/<corpus>/ablate/<slug>/<config id>
    AblateTables(perplexity=table, regrowth=regrow).save(out, meta=provenance(cfg))
    with tracking.stage_run(cfg, name=f"ablate/{cfg.model.name}/{cfg.data.name}/{slug}") as wb:
        for row in rows:
            wb.log(
                {
                    f"perplexity/{row['intervention']}": row["perplexity"],
                    f"entries_changed/{row['intervention']}": row["entries_changed"],
                }
            )
        wb.log({"perplexity": tracking.table(table.drop(columns="chunk_nll")), "regrowth": tracking.table(regrow)})


if __name__ == "__main__":
    cli.main("ablate", run)
