"""Rule detect: which activations are massive, where, at which tokens, from which layer on
(massive.detect, with detect.min_abs, detect.min_ratio and detect.delimiters), and which dims
are outlier features instead (detect.outlier_abs, outlier_token_share, outlier_layer_share,
massive_max_share). Token roles follow the run's protocol (model.bos): a BOS that begins every
sequence is role `bos`, the first text token `first`.

Reads the capture's topk, layer_stats and dim_max and writes results/<model>/<corpus>/detect/:
  massive.parquet    every massive entry (layer, sequence, position, dim, token, role, value, ratio)
  summary.parquet    one row per (dim, role): tokens, emerge_layer (first layer where found),
                     fade_layer (first layer after the last where found; null when it lasts to
                     the final block), peak_layer (where it is found in the most sequences,
                     then where it is largest), and there: the number of sequences, the mean
                     and std of the signed value across them, and the median |a|
  per_layer.parquet  one row per layer: mean median |a|, mean top-1 |a|, their ratio, the
                     exact number of massive entries per sequence, and where they are (massive_at:
                     "dim: token (sequences), ..." per dim, e.g. "507: '<s>' (16)" or
                     "12: [REG3] (10), [REG1] (2)"), the dims massive at most tokens there
                     (outlier_dims) and "saturated: ..." when more pass than the top-k holds
  outliers.parquet   one row per outlier feature dim (massive.measure.detect.OUTLIER_COLUMNS)
  summary.json       found (bool), a one-line verdict, the numbers the report quotes, the
                     outlier and shared dims, the saturation, and the protocol that ran
A model without massive activations gets empty tables and "none found". When a (layer,
sequence) has more massive entries than capture.top_k, the tables say "saturated" with the count.
"""

from __future__ import annotations

import logging

import yaml
from omegaconf import DictConfig

from massive.measure.detect import detect
from pipeline import cli, tracking
from pipeline.config import is_images
from pipeline.io import provenance, read_provenance, read_table, run_dir


def counted_with(path) -> dict:
    """The thresholds the capture counted with (its composed config's detect section)."""
    config = read_provenance(path).get("config")
    d = (yaml.safe_load(config) or {}).get("detect", {}) if config else {}
    return {key: d[key] for key in ("min_abs", "min_ratio", "outlier_abs", "outlier_ratio") if key in d}


log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    from massive.measure.capture import Capture
    from pipeline.model import protocol

    cap = run_dir(cfg, "capture")
    vision = is_images(cfg.data)
    for table in ("layer_stats", "topk"):  # a missing input: one line naming it
        read_table(cap / f"{table}.parquet")
    stats = Capture.load(cap)
    stats.vision = vision
    stats.thresholds = stats.thresholds or counted_with(cap / "layer_stats.parquet")
    d = cfg.detect
    proto = None if vision else protocol(cfg)
    found = detect(
        stats,
        min_abs=d.min_abs,
        min_ratio=d.min_ratio,
        delimiters=list(d.delimiters),
        bos=bool(proto and proto.bos),
        massive_max_share=d.massive_max_share,
        outlier_abs=d.outlier_abs,
        outlier_ratio=d.outlier_ratio,
        outlier_token_share=d.outlier_token_share,
        outlier_layer_share=d.outlier_layer_share,
    )
    out = run_dir(cfg, "detect")
    found.save(
        out,
        meta=provenance(cfg),
        summary_extra={
            "model": cfg.model.name,
            "corpus": cfg.data.name,
            **(proto.record() if proto else {"protocol": None}),
        },
    )
    log.info("%s on %s: %s", cfg.model.name, cfg.data.name, found.result["message"])
    with tracking.stage_run(cfg) as wb:
        wb.summary.update({k: v for k, v in found.result.items() if not isinstance(v, list)})
        wb.log({"summary": tracking.table(found.summary), "per_layer": tracking.table(found.per_layer)})


if __name__ == "__main__":
    cli.main("detect", run)
