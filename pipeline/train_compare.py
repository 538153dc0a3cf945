"""Rule train_compare: which attention variants grew massive activations, and which did not.

    python -m pipeline.train_compare train=cpu_backcopy

Reads every trained variant under results/train/<train.name>/ (metrics.parquet and the final
checkpoint.pt, in the order of the Variant enum) and writes there:
  comparison.parquet  one row per variant at its final step (massive.retrain.training.summarise, .contrast):
                      the regime it was trained in (optimizer, decay, dtype, how a sequence starts:
                      start, after_start; n_layer, n_embd, init, tie_head); losses; the start token's largest |a| over the median (its layer, over
                      sqrt(d), top-1 share), block 0's attention on the start token and on the
                      bias slot, Sink_1, the value-state norm ratio per layer; beside default:
                      the validation-loss gap and default's start-token ratio over this
                      variant's (`start_contrast`), also at matched loss (`matched_*`: the
                      better model at its first evaluation that reaches the worse one's final
                      loss); `massive`: top-1 |a| above detect.min_abs AND
                      top-1/median above detect.min_ratio (the paper's thresholds; tiny models
                      rarely pass them, so read the ratios)
  emergence.png       against the step: the attention sinks (block 0 on the start token, on the
                      slot) beside the start token's magnitude (|a| / median, top-1 share) and
                      its value-state norm
  layerwise.png       top-1/median and the start token's |a| / median per layer at the final step
The final-step statistics are recomputed from the checkpoint on the probe batch
(massive.retrain.training.emergence), so the table describes the saved weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from massive.core.errors import MassiveError
from pipeline import cli, paths, tracking
from pipeline.config import Variant
from pipeline.io import read_table, results_dir, root, write_table
from pipeline.names import plain

log = logging.getLogger(__name__)


def make_data(cfg: DictConfig, backcopy: dict | None = None):
    """The probe's data source; Bigram-Backcopy with the task a checkpoint was trained on (`backcopy`)."""
    from massive.retrain import training
    from massive.retrain.backcopy import BackcopySpec

    t = cfg.train
    return training.batches(
        plain(t.data),
        cfg.seed,
        BackcopySpec(**{**t.backcopy, **(backcopy or {})}),
        training.OpenWebTextSpec(**t.openwebtext),
        root(cfg) / cfg.paths.cache / "train" / "openwebtext",
    )


def final_stats(cfg: DictConfig, variant: str, ckpt_path):
    """The checkpoint's step, its per-layer emergence rows on the probe batch, its GPTConfig and optimizer."""
    from massive.retrain import training

    model, ckpt = training.load_trained(ckpt_path, variant)
    data = make_data(cfg, ckpt["train"].get("backcopy"))
    probe, _ = data.batch("probe", 0, cfg.train.probe_batch_size, model.config.block_size)
    t = ckpt["train"]
    setup = {
        "optimizer": t.get("optimizer", "adamw"),
        "decay": t.get("decay", "matrices"),
        "dtype": t.get("dtype", "float32"),
    }
    if t.get("data", "backcopy") == "backcopy":
        setup.update(
            {"start": t["backcopy"].get("start", "inside"), "after_start": t["backcopy"].get("after_start", "bigram")}
        )
    return ckpt["step"], training.emergence(model, probe, cfg.train.sink_threshold), model.config, setup


def save(fig, path, dpi: int) -> None:
    from pipeline.html import save_figure

    save_figure(fig, path, dpi, tight=False)


def run(cfg: DictConfig) -> None:
    import torch

    from massive.plots import figures as plots
    from massive.retrain import training

    torch.set_num_threads(cfg.train.num_threads)
    base = Path(paths.train_dir(cfg.train.name, results_dir(cfg)))
    found = [
        v.value
        for v in Variant
        if (base / v.value / "metrics.parquet").exists() and (base / v.value / "checkpoint.pt").exists()
    ]
    if not found:
        raise MassiveError(f"no trained variant under {base} (run pipeline.train first)")
    rows, histories, finals = [], {}, {}
    for variant in found:
        metrics = read_table(base / variant / "metrics.parquet")
        step, layers, gpt, setup = final_stats(cfg, variant, base / variant / "checkpoint.pt")
        histories[variant], finals[variant] = metrics, layers
        rows.append(
            training.summarise(
                variant, metrics, step, layers, cfg.detect.min_abs, cfg.detect.min_ratio, config=gpt, setup=setup
            )
        )
        log.info(
            "%s: step %d, val %.4f, start token %.1fx the median (layer %d, top-1 in %.0f%%), block-0 attention on it %.2f, "
            "on the slot %.2f",
            variant,
            step,
            rows[-1]["val_loss"],
            rows[-1]["start_over_median"],
            rows[-1]["start_layer"],
            100 * rows[-1]["top1_at_start"],
            rows[-1]["start_attn"],
            rows[-1]["slot_attn"],
        )
    table = training.contrast(pd.DataFrame(rows), histories)
    write_table(table, base / "comparison.parquet", cfg)
    save(plots.train_emergence(histories), base / "emergence.png", cfg.figures.dpi)
    save(plots.train_layerwise(finals), base / "layerwise.png", cfg.figures.dpi)
    with tracking.stage_run(cfg, name=f"train_compare/{cfg.train.name}") as wb:
        wb.log(
            {
                "comparison": tracking.table(table),
                "emergence": tracking.image(base / "emergence.png"),
                "layerwise": tracking.image(base / "layerwise.png"),
            }
        )


if __name__ == "__main__":
    cli.main("train_compare", run, config_name="train")
