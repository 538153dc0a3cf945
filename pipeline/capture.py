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

Vision transformers (image data) take the same path: the inputs are the tokenize rule's
pixel_values, a token is a position of the ViT's layout (pipeline/images.py: `[CLS]`,
`[REG0]`.., `patch r,c`; token_id is the position), and prompt.parquet holds the first image.
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
from pipeline import cli, images, tracking
from pipeline.config import is_images
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
        self.input_ids: torch.Tensor | None = None  # None: the token ids are the positions (images)
        self.seq_len = 0
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
        rows["token_id"].append(pos.ravel() if self.input_ids is None else np.take_along_axis(self.input_ids[:n].numpy(), pos, axis=1).ravel())
        self.seq_len = h.shape[1]
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


def full_stream(model, forward: Callable[[], object]) -> dict[int, np.ndarray]:
    """The whole residual stream [positions, dims] after every block, in float32, for one input."""
    out = {}

    def keep(layer, h):
        out[layer] = h[0].detach().to(torch.float32).cpu().numpy()

    with torch.inference_mode(), block_hooks(model, keep):
        forward()
    return out


def prompt_table(stream: dict[int, np.ndarray], token_ids: list[int], tokens: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"layer": layer, "hook": resid_post(layer), "position": pos, "token_id": token_ids[pos],
                          "token": tokens[pos], "values": h[pos]} for layer, h in stream.items() for pos in range(h.shape[0])])


def capture_prompt(model, tok, prompt: str, device) -> pd.DataFrame:
    """The full residual stream after every block for one short prompt (the paper's Fig. 1)."""
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stream = full_stream(model, lambda: model(ids.to(device)))
    return prompt_table(stream, ids[0].tolist(), [tok.decode([int(i)]) for i in ids[0]])


def capture_image(model, pixel_values: torch.Tensor, device) -> pd.DataFrame:
    """The full residual stream after every block for one image (the ViT analogue of Fig. 1)."""
    stream = full_stream(model, lambda: model(**images.forward_kwargs(model, pixel_values.to(device))))
    n = next(iter(stream.values())).shape[0]
    lay = images.layout(model.config, pixel_values.shape, n)
    return prompt_table(stream, list(range(n)), [lay.name(p) for p in range(n)])


def run(cfg: DictConfig) -> None:
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    tokens = read_table(tokens_file(cfg))
    vision = is_images(cfg.data)
    tok = None if vision else load_tokenizer(cfg)
    model = load_model(cfg, device)
    if vision:
        inputs = images.pixels_of(tokens)
        forward = lambda batch: model(**images.forward_kwargs(model, batch.to(device)))  # noqa: E731
    else:
        inputs = torch.tensor(np.stack(tokens["input_ids"].to_numpy()), dtype=torch.long)
        forward = lambda batch: model(batch.to(device), use_cache=False)  # noqa: E731
    stats = Stats(cfg.capture.top_k, cfg.capture.backend)
    bs = cfg.capture.batch_size
    with torch.inference_mode(), block_hooks(model, stats):
        for start in tqdm(range(0, len(inputs), bs), desc=f"capture {cfg.model.name}/{cfg.data.name}", unit=" batch"):
            batch = inputs[start : start + bs]
            stats.seq_ids = tokens["seq_id"].iloc[start : start + bs].tolist()
            stats.input_ids = None if vision else batch
            forward(batch)

    out = run_dir(cfg, "capture")
    layer_stats = pd.DataFrame(stats.layer_rows).sort_values(["layer", "seq_id"], kind="stable")
    topk = pd.DataFrame({k: np.concatenate(v) for k, v in stats.topk_rows.items()})
    if vision:
        lay = images.layout(model.config, inputs.shape, stats.seq_len)
        texts = {p: lay.name(p) for p in range(stats.seq_len)}
    else:
        texts = token_texts(tok, topk["token_id"])
    topk.insert(topk.columns.get_loc("token_id") + 1, "token", topk["token_id"].map(texts))
    topk.insert(1, "hook", topk["layer"].map(resid_post))
    topk = topk.sort_values(["layer", "seq_id", "rank"], kind="stable")
    dim_max = pd.DataFrame([{"layer": layer, "hook": resid_post(layer), "dim": d, "max_abs": float(v)}
                            for layer, m in sorted(stats.dim_max.items()) for d, v in enumerate(m.tolist())])
    prompt = capture_image(model, inputs[:1], device) if vision else capture_prompt(model, tok, cfg.capture.prompt, device)
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
