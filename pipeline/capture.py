"""Rule capture: statistics of the residual stream after every block (massive.capture).

Reads the tokenize rule's tokens.parquet (token ids, or a ViT's pixel values), runs the model
with the capture's hooks and writes results/<model>/<corpus>/capture/ (schemas in docs/schemas.md):
  layer_stats.parquet  one row per (layer, sequence): median |a|, top-1/2/3 |a|, and the exact
                       number of entries above both massive thresholds, for each pair of the
                       ladders capture.counts.min_abs x min_ratio (n_massive_<abs>_<ratio>)
  topk.parquet         one row per (layer, sequence, rank): the top-k entries
  dim_max.parquet      one row per (layer, dim): max |a| over all tokens and sequences, the
                       positions above each pair of capture.counts.outlier_abs x outlier_ratio and
                       of the massive ladders (detect picks its thresholds' columns: Capture.at,
                       so a change of detect's thresholds never runs the capture again)
  prompt.parquet       one row per (layer, position) of capture.prompt, beginning as the sequences
                       do (model.bos), or a ViT's first image: the full signed vector
A block output with inf or NaN (float16 overflow) stops the rule with one line naming the block
and the dtype; nothing is written.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from massive.core.sequences import encode_prompt
from pipeline import cli, tracking
from pipeline.config import is_images
from pipeline.io import provenance, read_table, run_dir, tokens_file, write_table
from pipeline.names import plain


def run(cfg: DictConfig) -> None:
    import torch

    from massive.measure.capture import capture, prompt
    from massive.vision import images
    from pipeline.model import load_model, load_tokenizer, pick_device, protocol

    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    tokens = read_table(tokens_file(cfg))
    vision = is_images(cfg.data)
    tok = None if vision else load_tokenizer(cfg)
    model = load_model(cfg, device)
    if vision:
        inputs = images.pixels_of(tokens)
    else:
        inputs = torch.tensor(np.stack(tokens["input_ids"].to_numpy()), dtype=torch.long)
    progress = partial(tqdm, desc=f"capture {cfg.model.name}/{cfg.data.name}", unit=" batch")
    stats = capture(
        model,
        inputs,
        k=cfg.capture.top_k,
        tok=tok,
        batch_size=cfg.capture.batch_size,
        backend=plain(cfg.capture.backend),
        seq_ids=tokens["seq_id"].tolist(),
        device=device,
        progress=progress,
        **{key: list(value) for key, value in cfg.capture.counts.items()},
    )
    first = inputs[:1] if vision else encode_prompt(tok, cfg.capture.prompt, protocol=protocol(cfg, tok))
    table = prompt(model, first, tok, device=device)

    out = run_dir(cfg, "capture")
    stats.save(out, meta=provenance(cfg))  # layer_stats, topk, dim_max (Capture.load reads them back)
    write_table(table, out / "prompt.parquet", cfg)
    with tracking.stage_run(cfg) as wb:
        for row in stats.per_layer().itertuples():
            wb.log(
                {
                    "layer": row.layer,
                    "median_abs": row.median_abs,
                    "top1_abs": row.top1_abs,
                    "top1_over_median": row.top1_over_median,
                }
            )
        wb.log({"layer_stats": tracking.table(stats.layer_stats)})


if __name__ == "__main__":
    cli.main("capture", run)
