"""Rule ablate: perplexity of one model on one corpus under each intervention.

The paper's causal test: massive activations act as fixed biases, so setting them to zero
breaks the model while setting them to their mean changes nothing, and zeroing as many ordinary
activations (the control) changes nothing either. The model is loaded once and serves every
intervention in ablate.interventions (pipeline/interventions.py), applied at the blocks named by
the `layers` spec: `emerge` (the block where detection saw them appear; the default), `all`,
or block indices joined by "_" (e.g. `2_3`).

Perplexity follows the paper: the corpus's documents in order joined by blank lines, tokenised,
cut into non-overlapping seq_len chunks (the first ablate.max_chunks), cross-entropy over every
predicted token, PPL = exp(mean). Output: results/<model>/<corpus>/ablate/<layers>/perplexity.parquet
with one row per intervention.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from pipeline import cli, interventions, tracking
from pipeline.cli import PipelineError
from pipeline.detect import role
from pipeline.io import corpus_file, read_table, run_dir, write_table
from pipeline.model import load_model, load_tokenizer, num_layers, pick_device
from pipeline.tokenize import check_seq_len


def parse_layers(spec: str, emerge: int | None, n_layers: int) -> list[int]:
    if spec == "emerge":
        return [] if emerge is None else [emerge]
    if spec == "all":
        return list(range(n_layers))
    try:
        layers = [int(x) for x in spec.split("_")]
    except ValueError:
        raise PipelineError(f"ablate layers spec {spec!r} is not 'emerge', 'all' or block indices joined by '_'") from None
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise PipelineError(f"ablate layer {bad[0]} is out of range: the model has blocks 0..{n_layers - 1}")
    return layers


def eval_chunks(cfg: DictConfig, tok, seq_len: int) -> torch.Tensor:
    docs = read_table(corpus_file(cfg))["text"].tolist()
    ids = tok("\n\n".join(docs), add_special_tokens=False)["input_ids"]
    n = min(len(ids) // seq_len, cfg.ablate.max_chunks)
    if n == 0:
        raise PipelineError(f"corpus {cfg.data.name!r} has fewer than {seq_len} tokens: no perplexity chunk")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def token_roles(ids: torch.Tensor, texts: dict[int, str], delimiters: list[str]) -> torch.Tensor:
    roles = [[interventions.ROLES.index(role(t, texts[int(i)], delimiters)) for t, i in enumerate(row)] for row in ids.tolist()]
    return torch.tensor(roles, dtype=torch.long)


def perplexity(model, chunks: torch.Tensor, batch_size: int, device, before_batch=None) -> tuple[float, int]:
    """exp(mean cross-entropy over every predicted token) and the number of tokens."""
    nll, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
        if before_batch is not None:
            before_batch(batch)
        logits = model(batch.to(device), use_cache=False).logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1).to(device), reduction="sum")
        nll += loss.item()
        count += batch[:, 1:].numel()
    return math.exp(nll / count), count


def massive_means(massive: pd.DataFrame) -> dict[tuple[int, int, str], float]:
    """Mean signed value of each (block, dim, role), and of each (block, dim) as role "any",
    over the capture's sequences."""
    if massive.empty:
        return {}
    means = massive.groupby(["layer", "dim", "role"])["value"].mean()
    out = {(int(layer), int(dim), r): float(v) for (layer, dim, r), v in means.items()}
    for (layer, dim), v in massive.groupby(["layer", "dim"])["value"].mean().items():
        out[(int(layer), int(dim), "any")] = float(v)
    return out


def run(cfg: DictConfig) -> None:
    unknown = [name for name in cfg.ablate.interventions if name not in interventions.INTERVENTIONS]
    if unknown:
        raise PipelineError(f"unknown intervention {unknown[0]!r} (known: {', '.join(sorted(interventions.INTERVENTIONS))})")
    det = run_dir(cfg, "detect")
    result = json.loads((det / "summary.json").read_text())
    summary, massive = read_table(det / "summary.parquet"), read_table(det / "massive.parquet")
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    n_layers = num_layers(model.config)
    layers = parse_layers(cfg.ablate.layers, result.get("emerge_layer"), n_layers)
    dims = sorted(summary["dim"].unique().tolist())
    chunks = eval_chunks(cfg, tok, check_seq_len(cfg))
    texts = {int(i): tok.decode([int(i)]) for i in np.unique(chunks.numpy())}
    roles = token_roles(chunks, texts, list(cfg.detect.delimiters))
    means = massive_means(massive)

    rows = []
    for name in tqdm(cfg.ablate.interventions, desc=f"ablate {cfg.model.name}/{cfg.data.name}", unit=" intervention"):
        ctx = interventions.Context(layer=-1, roles=roles[:0], means=means,
                                    generator=torch.Generator().manual_seed(cfg.seed))
        offset = {"start": 0}

        def before_batch(batch, ctx=ctx, offset=offset):
            ctx.roles = roles[offset["start"] : offset["start"] + len(batch)].to(device)
            offset["start"] += len(batch)

        with torch.inference_mode(), interventions.applied(model, name, layers, dims, cfg.detect.min_abs,
                                                           cfg.detect.min_ratio, ctx):
            ppl, n_tokens = perplexity(model, chunks, cfg.ablate.batch_size, device, before_batch)
        rows.append({"model": cfg.model.name, "corpus": cfg.data.name, "intervention": name, "layers": cfg.ablate.layers,
                     "blocks": ",".join(map(str, layers)), "dims": ",".join(map(str, dims)), "perplexity": ppl,
                     "n_tokens": n_tokens, "n_chunks": len(chunks), "entries_changed": ctx.changed})
    table = pd.DataFrame(rows)
    base = table.loc[table["intervention"] == "none", "perplexity"]
    table["ratio_to_none"] = table["perplexity"] / base.iloc[0] if len(base) else np.nan
    out = run_dir(cfg, "ablate") / cfg.ablate.layers
    write_table(table, out / "perplexity.parquet", cfg)
    with tracking.stage_run(cfg, name=f"ablate/{cfg.model.name}/{cfg.data.name}/{cfg.ablate.layers}") as wb:
        for row in rows:
            wb.log({f"perplexity/{row['intervention']}": row["perplexity"], f"entries_changed/{row['intervention']}": row["entries_changed"]})
        wb.log({"perplexity": tracking.table(table)})


if __name__ == "__main__":
    cli.main("ablate", run)
