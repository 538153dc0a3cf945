"""Rule ablate: perplexity of one model on one corpus under each intervention.

The paper's causal test: massive activations act as fixed biases, so setting them to zero
breaks the model while setting them to their mean changes nothing, and zeroing as many ordinary
activations (the control) changes nothing either. The model is loaded once and serves every
intervention in ablate.interventions (massive/interventions.py), applied at the blocks named by
ablate.layers: `emerge` (the block where detection saw them appear; the default), `all`, or a
list of block indices (e.g. `ablate.layers=[2,3]`; "2_3" in paths and tables).

Perplexity follows the paper (massive.sequences.perplexity_chunks, massive.perplexity): the
corpus's documents in order joined by tokenize.separator, tokenised, cut into non-overlapping
seq_len chunks (the first ablate.max_chunks), PPL = exp(mean cross-entropy over every predicted
token; each chunk begins as model.bos says, made by the same function as tokenize's sequences).
A non-finite loss (float16 overflow) is a one-line error and writes nothing. Output:
results/<model>/<corpus>/ablate/<layers>/perplexity.parquet with one row per intervention.
"""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from massive import arch, interventions
from massive.errors import MassiveError
from massive.perplexity import perplexity
from massive.sequences import perplexity_chunks
from pipeline import cli, tracking
from pipeline.checks import seq_len
from pipeline.config import layers_slug, layers_spec
from pipeline.io import corpus_file, read_detection, read_table, run_dir, write_table
from pipeline.model import load_model, load_tokenizer, pick_device, protocol


def run(cfg: DictConfig) -> None:
    if "none" not in cfg.ablate.interventions:
        raise MassiveError("ablate.interventions must include 'none': the baseline every ratio is measured against")
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    found = interventions.targets(read_detection(cfg), layers_spec(cfg.ablate.layers), arch.num_layers(model.config))
    docs = read_table(corpus_file(cfg))["text"].tolist()
    proto = protocol(cfg, tok)
    chunks = perplexity_chunks(tok, docs, seq_len(cfg), cfg.ablate.max_chunks, separator=cfg.tokenize.separator,
                               protocol=proto)
    roles = interventions.TokenRoles(tok, list(cfg.detect.delimiters), bos=proto.bos)
    slug, blocks = layers_slug(cfg.ablate.layers), ",".join(map(str, found.layers))

    rows = []
    for name in tqdm(cfg.ablate.interventions, desc=f"ablate {cfg.model.name}/{cfg.data.name}", unit=" intervention"):
        with interventions.intervene(model, found, name, tokenizer=tok, seed=cfg.seed, min_abs=cfg.detect.min_abs,
                                     min_ratio=cfg.detect.min_ratio, delimiters=cfg.detect.delimiters, roles_of=roles) as ctx:
            ppl = perplexity(model, chunks, cfg.ablate.batch_size, device,
                             where=f"ablate {cfg.model.name}/{cfg.data.name}: intervention {name!r} at blocks {blocks or '(none)'}")
        rows.append({"model": cfg.model.name, "corpus": cfg.data.name, "protocol": proto.name, "intervention": name, "layers": slug,
                     "blocks": blocks, "dims": ",".join(map(str, found.dims)), "perplexity": ppl.value,
                     "n_tokens": ppl.n_tokens, "n_chunks": len(chunks), "entries_changed": ctx.changed})
    table = pd.DataFrame(rows)
    base = table.loc[table["intervention"] == "none", "perplexity"]
    table["ratio_to_none"] = table["perplexity"] / base.iloc[0]
    write_table(table, run_dir(cfg, "ablate") / slug / "perplexity.parquet", cfg)
    with tracking.stage_run(cfg, name=f"ablate/{cfg.model.name}/{cfg.data.name}/{slug}") as wb:
        for row in rows:
            wb.log({f"perplexity/{row['intervention']}": row["perplexity"], f"entries_changed/{row['intervention']}": row["entries_changed"]})
        wb.log({"perplexity": tracking.table(table)})


if __name__ == "__main__":
    cli.main("ablate", run)
