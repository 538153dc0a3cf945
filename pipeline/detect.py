"""Rule detect: which activations are massive, where, at which tokens, from which layer on
(massive.detect, with detect.min_abs, detect.min_ratio and detect.delimiters).

Reads the capture's topk and layer_stats and writes results/<model>/<corpus>/detect/:
  massive.parquet    every massive entry (layer, sequence, position, dim, token, role, value, ratio)
  summary.parquet    one row per (dim, role): tokens, emerge_layer (first layer where found),
                     fade_layer (first layer after the last where found; null when it lasts to
                     the final block), peak_layer (where it is found in the most sequences,
                     then where it is largest), and there: the number of sequences, the mean
                     and std of the signed value across them, and the median |a|
  per_layer.parquet  one row per layer: mean median |a|, mean top-1 |a|, their ratio, the
                     number of massive entries per sequence, and where they are (massive_at:
                     "dim: token (sequences), ..." per dim, e.g. "507: '<s>' (16)" or
                     "12: [REG3] (10), [REG1] (2)")
  summary.json       found (bool), a one-line verdict, and the numbers the report quotes
A model without massive activations gets empty tables and "none found". When a (layer,
sequence) has capture.top_k massive entries, a warning says to raise top_k.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from massive.capture import Capture
from massive.detect import detect
from pipeline import cli, tracking
from pipeline.config import is_images
from pipeline.io import read_table, run_dir, write_json, write_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    cap = run_dir(cfg, "capture")
    stats = Capture(layer_stats=read_table(cap / "layer_stats.parquet"), topk=read_table(cap / "topk.parquet"),
                    vision=is_images(cfg.data))
    found = detect(stats, min_abs=cfg.detect.min_abs, min_ratio=cfg.detect.min_ratio, delimiters=list(cfg.detect.delimiters))
    out = run_dir(cfg, "detect")
    write_table(found.massive, out / "massive.parquet", cfg)
    write_table(found.summary, out / "summary.parquet", cfg)
    write_table(found.per_layer, out / "per_layer.parquet", cfg)
    write_json({**found.result, "model": cfg.model.name, "corpus": cfg.data.name, "n_layers": found.n_layers},
               out / "summary.json")
    log.info("%s on %s: %s", cfg.model.name, cfg.data.name, found.result["message"])
    with tracking.stage_run(cfg) as wb:
        wb.summary.update({k: v for k, v in found.result.items() if not isinstance(v, list)})
        wb.log({"summary": tracking.table(found.summary), "per_layer": tracking.table(found.per_layer)})


if __name__ == "__main__":
    cli.main("detect", run)
