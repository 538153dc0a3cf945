"""Rule capture: statistics of the residual stream after every block, computed on the fly.

A forward hook on each block reads its output (`blocks.L.hook_resid_post`, the residual stream
after both residual adds, as the paper measures) and reduces it at once, per sequence, in
float32: the top-k |a| with their positions, dims, tokens and signed values, the median |a|,
and the max |a| per feature dim. No hidden state is kept past its hook, so memory does not grow
with depth, and the hooks return nothing, so the logits are untouched.

Outputs in results/<model>/<corpus>/capture/ (schemas in README.md, "Result tables"):
  layer_stats.parquet  one row per (layer, sequence): median |a|, top-1/2/3 |a|
  topk.parquet         one row per (layer, sequence, rank): the top-k entries
  dim_max.parquet      one row per (layer, dim): max |a| over all tokens and sequences
  prompt.parquet       one row per (layer, position) of capture.prompt: the full signed vector
"""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from kernels.topk import top_abs_rows
from pipeline import cli, tracking
from pipeline.io import read_table, run_dir, tokens_file, write_table
from pipeline.model import find_parts, load_model, load_tokenizer, pick_device, resid_post

log = logging.getLogger(__name__)


@contextmanager
def block_hooks(model: torch.nn.Module, fn: Callable[[int, torch.Tensor], None]):
    """Call fn(layer, resid_post) for every block's output during forward passes."""
    handles = []
    for layer, block in enumerate(find_parts(model).blocks):
        def hook(_module, _inputs, output, layer=layer):
            fn(layer, output[0] if isinstance(output, tuple) else output)

        handles.append(block.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class Stats:
    """Accumulates per-layer, per-sequence reductions of the residual stream."""

    def __init__(self, k: int, backend: str):
        self.k, self.backend = k, backend
        self.seq_ids: list[int] = []  # the sequences of the current batch
        self.input_ids: torch.Tensor | None = None
        self.layer_rows: list[dict] = []
        self.topk_rows: dict[str, list] = defaultdict(list)
        self.dim_max: dict[int, torch.Tensor] = {}

    def __call__(self, layer: int, h: torch.Tensor) -> None:
        d, n = h.shape[-1], len(self.seq_ids)
        r = top_abs_rows(h[:n], self.k, backend=self.backend)
        medians = median_abs(h[:n])
        top, idx, signed = r.values.cpu().numpy(), r.indices.cpu().numpy(), r.signed.cpu().numpy()
        pos, dim = idx // d, idx % d
        k = top.shape[1]
        for b, seq_id in enumerate(self.seq_ids):
            self.layer_rows.append({"layer": layer, "hook": resid_post(layer), "seq_id": seq_id, "median_abs": float(medians[b]),
                                    "top1_abs": top[b, 0], "top2_abs": top[b, min(1, k - 1)], "top3_abs": top[b, min(2, k - 1)]})
        rows = self.topk_rows
        rows["layer"].append(np.full(n * k, layer))
        rows["seq_id"].append(np.repeat(np.asarray(self.seq_ids), k))
        rows["rank"].append(np.tile(np.arange(k), n))
        rows["position"].append(pos.ravel())
        rows["dim"].append(dim.ravel())
        rows["token_id"].append(np.take_along_axis(self.input_ids[:n].numpy(), pos, axis=1).ravel())
        rows["value"].append(signed.ravel())
        rows["abs_value"].append(top.ravel())
        dm = r.dim_max.amax(dim=0).cpu()
        self.dim_max[layer] = dm if layer not in self.dim_max else torch.maximum(self.dim_max[layer], dm)


def median_abs(h: torch.Tensor) -> np.ndarray:
    """The median |a| of each sequence (the lower middle value, as torch.median), in float32.

    On the CPU numpy's introselect is about 7x faster than torch.median; on a GPU torch is used."""
    a = h.detach().to(torch.float32).abs().reshape(h.shape[0], -1)
    m = (a.shape[1] - 1) // 2
    if a.is_cuda:
        return a.median(dim=1).values.cpu().numpy()
    return np.partition(a.numpy(), m, axis=1)[:, m]


def token_texts(tok, ids) -> dict[int, str]:
    return {int(i): tok.decode([int(i)]) for i in np.unique(ids)}


def capture_prompt(model, tok, prompt: str, device) -> pd.DataFrame:
    """The full residual stream after every block for one short prompt (the paper's Fig. 1)."""
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    texts = [tok.decode([int(i)]) for i in ids[0]]
    rows = []

    def keep(layer, h):
        for pos in range(h.shape[1]):
            rows.append({"layer": layer, "hook": resid_post(layer), "position": pos, "token_id": int(ids[0, pos]),
                         "token": texts[pos], "values": h[0, pos].detach().to(torch.float32).cpu().numpy()})

    with torch.inference_mode(), block_hooks(model, keep):
        model(ids.to(device))
    return pd.DataFrame(rows)


def run(cfg: DictConfig) -> None:
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    tokens = read_table(tokens_file(cfg))
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    ids = torch.tensor(np.stack(tokens["input_ids"].to_numpy()), dtype=torch.long)
    stats = Stats(cfg.capture.top_k, cfg.capture.backend)
    bs = cfg.capture.batch_size
    with torch.inference_mode(), block_hooks(model, stats):
        for start in tqdm(range(0, len(ids), bs), desc=f"capture {cfg.model.name}/{cfg.data.name}", unit=" batch"):
            batch = ids[start : start + bs]
            stats.seq_ids = tokens["seq_id"].iloc[start : start + bs].tolist()
            stats.input_ids = batch
            model(batch.to(device), use_cache=False)

    out = run_dir(cfg, "capture")
    layer_stats = pd.DataFrame(stats.layer_rows).sort_values(["layer", "seq_id"], kind="stable")
    topk = pd.DataFrame({k: np.concatenate(v) for k, v in stats.topk_rows.items()})
    texts = token_texts(tok, topk["token_id"])
    topk.insert(topk.columns.get_loc("token_id") + 1, "token", topk["token_id"].map(texts))
    topk.insert(1, "hook", topk["layer"].map(resid_post))
    topk = topk.sort_values(["layer", "seq_id", "rank"], kind="stable")
    dim_max = pd.DataFrame([{"layer": layer, "hook": resid_post(layer), "dim": d, "max_abs": float(v)}
                            for layer, m in sorted(stats.dim_max.items()) for d, v in enumerate(m.tolist())])
    prompt = capture_prompt(model, tok, cfg.capture.prompt, device)
    write_table(layer_stats, out / "layer_stats.parquet", cfg)
    write_table(topk, out / "topk.parquet", cfg)
    write_table(dim_max, out / "dim_max.parquet", cfg)
    write_table(prompt, out / "prompt.parquet", cfg)

    per_layer = layer_stats.groupby("layer")[["median_abs", "top1_abs"]].mean()
    with tracking.stage_run(cfg) as wb:
        for layer, row in per_layer.iterrows():
            wb.log({"layer": layer, "median_abs": row.median_abs, "top1_abs": row.top1_abs,
                    "top1_over_median": row.top1_abs / max(row.median_abs, 1e-12)})
        wb.log({"layer_stats": tracking.table(layer_stats)})


if __name__ == "__main__":
    cli.main("capture", run)
