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
from contextlib import contextmanager

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


class TokenRoles:
    """input_ids -> role index per position (first, delimiter, other), decoding each id once."""

    def __init__(self, tok, delimiters: list[str]):
        self.tok, self.delimiters, self.texts = tok, list(delimiters), {}

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in ids.tolist():
            for i in row:
                if i not in self.texts:
                    self.texts[i] = self.tok.decode([i])
            rows.append([interventions.ROLES.index(role(t, self.texts[i], self.delimiters)) for t, i in enumerate(row)])
        return torch.tensor(rows, dtype=torch.long)


def perplexity(model, chunks: torch.Tensor, batch_size: int, device) -> tuple[float, int]:
    """exp(mean cross-entropy over every predicted token) and the number of tokens."""
    nll, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
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


def targets(cfg: DictConfig, n_layers: int) -> tuple[list[int], list[int], dict]:
    """From the detection: the blocks to intervene at, the massive dims, and their means."""
    det = run_dir(cfg, "detect")
    result = json.loads((det / "summary.json").read_text())
    summary, massive = read_table(det / "summary.parquet"), read_table(det / "massive.parquet")
    layers = parse_layers(cfg.ablate.layers, result.get("emerge_layer"), n_layers)
    return layers, sorted(summary["dim"].unique().tolist()), massive_means(massive)


@contextmanager
def intervening(cfg: DictConfig, model, tok, name: str, layers: list[int], dims: list[int], means: dict):
    """Intervention `name` applied to `model` (seeded, with token roles from `tok`)."""
    ctx = interventions.Context(layer=-1, roles=torch.zeros(0, 0, dtype=torch.long), means=means,
                                generator=torch.Generator().manual_seed(cfg.seed))
    with interventions.applied(model, name, layers, dims, cfg.detect.min_abs, cfg.detect.min_ratio, ctx,
                               TokenRoles(tok, cfg.detect.delimiters)):
        yield ctx


def run(cfg: DictConfig) -> None:
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    layers, dims, means = targets(cfg, num_layers(model.config))
    chunks = eval_chunks(cfg, tok, check_seq_len(cfg))

    rows = []
    for name in tqdm(cfg.ablate.interventions, desc=f"ablate {cfg.model.name}/{cfg.data.name}", unit=" intervention"):
        with torch.inference_mode(), intervening(cfg, model, tok, name, layers, dims, means) as ctx:
            ppl, n_tokens = perplexity(model, chunks, cfg.ablate.batch_size, device)
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
