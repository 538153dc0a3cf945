"""Rule train_scale: does the start-token contrast grow with the model? The comparison of every
grid run of one training config, against width.

    python -m pipeline.train_scale train=cpu_backcopy_scale sweep_name=retrain_scale

Reads the comparison.parquet of each run that the sweep's `train.scale` grid makes of the config
(pipeline/sweep.py train_runs: results/train/<config>_n_embd<E>_n_layer<L>/) and writes in
results/train/<config>_scale/:
  scale.parquet  one row per (run, variant): n_embd, n_layer, the validation loss, the start
                 token's |a| / median, |a| / (median x sqrt(n_embd)), top-1 share, block 0's
                 attention on the start token and on the bias slot, and the contrast to default
  scale.png      those against n_embd, one line per (variant, n_layer) (massive.plots.figures.train_scale)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from massive.core.errors import MassiveError
from pipeline import cli, paths
from pipeline import sweep as sweeps
from pipeline.io import read_table, results_dir, write_table

log = logging.getLogger(__name__)

COLUMNS = [
    "run",
    "variant",
    "optimizer",
    "decay",
    "start",
    "after_start",
    "init",
    "tie_head",
    "dtype",
    "n_embd",
    "n_layer",
    "step",
    "val_loss",
    "val_loss_gap",
    "start_over_median",
    "start_over_median_sqrt_d",
    "start_layer",
    "top1_at_start",
    "start_contrast",
    "matched_step",
    "matched_reference_step",
    "matched_val_gap",
    "matched_contrast",
    "start_attn",
    "slot_attn",
    "sink1",
    "layer0_start_value_ratio",
    "elapsed_min",
]


def run(cfg: DictConfig) -> None:
    from massive.plots import figures as plots

    sweep = sweeps.load(cfg.sweep_name)
    config = cfg.train.name
    runs = [name for name, base, _ in sweeps.train_runs(sweep) if base == config]
    if not (sweep.get("train") or {}).get("scale") or not runs:
        raise MassiveError(f"sweep {cfg.sweep_name!r} has no train.scale grid for train={config}")
    results = results_dir(cfg)
    parts = []
    for name in runs:
        path = Path(paths.train_file(name, "comparison.parquet", results))
        if not path.exists():
            raise MassiveError(f"{path} is missing (run rule train_compare for {name} first)")
        parts.append(read_table(path).assign(run=name))
    table = pd.concat(parts, ignore_index=True)
    table = table[[c for c in COLUMNS if c in table.columns]].sort_values(
        ["variant", "n_layer", "n_embd"], kind="stable"
    )
    for _, r in table.iterrows():
        log.info(
            "%s %s: val %.4f, start %.1fx median (%.2f x sqrt(d)), block-0 attention on start %.2f, slot %.2f",
            r["run"],
            r["variant"],
            r["val_loss"],
            r["start_over_median"],
            r["start_over_median_sqrt_d"],
            r["start_attn"],
            r["slot_attn"],
        )
    write_table(table.reset_index(drop=True), paths.train_scale_file(config, "scale.parquet", results), cfg)
    from pipeline.html import save_figure

    save_figure(
        plots.train_scale(table),
        Path(paths.train_scale_file(config, "scale.png", results)),
        cfg.figures.dpi,
        tight=False,
    )


if __name__ == "__main__":
    cli.main("train_scale", run, config_name="train")
