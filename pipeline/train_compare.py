"""Rule train_compare: which attention variants grew massive activations, and which did not.

    python -m pipeline.train_compare train=cpu_backcopy

Reads every trained variant under results/train/<train.name>/ (metrics.parquet and the final
checkpoint.pt, in the order of the Variant enum) and writes there:
  comparison.parquet  one row per variant at its final step: losses; top-1 |a|, top-1/median per
                      layer and their maxima; the first position's largest |a| (and over the
                      median); the attention on the first position and on the bias slot; Sink_1;
                      `massive`: top-1 |a| above detect.min_abs AND top-1/median above
                      detect.min_ratio (the paper's thresholds; tiny models rarely pass them,
                      so read the ratios)
  emergence.png       top-1/median, first-position/median, Sink_1 and slot attention against the step
  layerwise.png       top-1/median and first-position |a| per layer at the final step
The final-step statistics are recomputed from the checkpoint on the probe batch, so the table
describes the saved weights.
"""

from __future__ import annotations

import copy
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline import cli, tracking  # noqa: E402
from pipeline.cli import PipelineError  # noqa: E402
from pipeline.config import Variant  # noqa: E402
from pipeline.gpt import GPT  # noqa: E402
from pipeline.io import atomic_path, read_table, root, write_table  # noqa: E402
from pipeline.train import _strip_hydra, emergence, gpt_config, make_data  # noqa: E402

log = logging.getLogger(__name__)


def final_stats(cfg: DictConfig, variant: str, ckpt_path) -> tuple[int, list[dict]]:
    """The checkpoint's step and its per-layer emergence rows on the probe batch."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    vcfg = copy.deepcopy(cfg)
    vcfg.train.variant = variant
    for key in ("model", "backcopy"):  # the architecture and task it was trained with
        if key in ckpt["train"]:
            vcfg.train[key].merge_with(ckpt["train"][key])
    model = GPT(gpt_config(vcfg))
    model.load_state_dict(ckpt["model"])
    probe, _ = make_data(vcfg).batch("probe", 0, cfg.train.probe_batch_size, vcfg.train.model.block_size)
    return ckpt["step"], emergence(model, probe, cfg.train.sink_threshold)


def summarise(cfg: DictConfig, variant: str, metrics: pd.DataFrame, step: int, layers: list[dict]) -> dict:
    last = metrics[metrics["step"] == metrics["step"].max()].iloc[0]
    top = max(layers, key=lambda r: r["top1_over_median"])
    first = max(layers, key=lambda r: r["first_abs"])
    row = {
        "variant": variant, "step": step, "train_loss": float(last["train_loss"]), "val_loss": float(last["val_loss"]),
        "top1_abs": max(r["top1_abs"] for r in layers), "max_top1_over_median": top["top1_over_median"],
        "max_layer": top["layer"], "top1_at_first": top["top1_at_first"],
        "first_abs": first["first_abs"], "first_over_median": max(r["first_over_median"] for r in layers),
        "first_attn": max(r["first_attn"] for r in layers), "slot_attn": max(r["slot_attn"] for r in layers),
        "sink1": layers[0]["sink1"], "elapsed_min": float(last["elapsed_s"]) / 60,
    }
    row["massive"] = bool(row["top1_abs"] > cfg.detect.min_abs and row["max_top1_over_median"] > cfg.detect.min_ratio)
    for r in layers:
        row[f"layer{r['layer']}_top1_over_median"] = r["top1_over_median"]
        row[f"layer{r['layer']}_first_over_median"] = r["first_over_median"]
    return row


def plot_emergence(histories: dict[str, pd.DataFrame], path, dpi: int) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for variant, m in histories.items():
        per_step = m.groupby("step").agg(top=("top1_over_median", "max"), first=("first_over_median", "max"),
                                         sink1=("sink1", "first"), slot=("slot_attn", "max"))
        axes[0].plot(per_step.index, per_step["top"], marker=".", label=variant)
        axes[1].plot(per_step.index, per_step["first"], marker=".", label=variant)
        axes[2].plot(per_step.index, per_step["sink1"], marker=".", label=variant)
        axes[3].plot(per_step.index, per_step["slot"], marker=".", label=variant)
    axes[0].set(title="largest top-1 |a| / median over layers", xlabel="step", yscale="log")
    axes[1].set(title="first position: largest |a| / median (max over layers)", xlabel="step", yscale="log")
    axes[2].set(title="Sink_1 (share of heads: first-token attention > threshold)", xlabel="step", ylim=(-0.05, 1.05))
    axes[3].set(title="attention on the bias slot (max over layers)", xlabel="step", ylim=(-0.05, 1.05))
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def plot_layerwise(finals: dict[str, list[dict]], path, dpi: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant, layers in finals.items():
        x = [r["layer"] for r in layers]
        axes[0].plot(x, [r["top1_over_median"] for r in layers], marker="o", label=variant)
        axes[1].plot(x, [r["first_abs"] for r in layers], marker="o", label=variant)
    axes[0].set(title="top-1 |a| / median |a| after each block (final step)", xlabel="layer", yscale="log")
    axes[1].set(title="first position: largest |a| after each block", xlabel="layer", yscale="log")
    for ax in axes:
        ax.set_xticks(x)
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def run(cfg: DictConfig) -> None:
    cfg = _strip_hydra(cfg)
    torch.set_num_threads(cfg.train.num_threads)
    base = root(cfg) / cfg.paths.results / "train" / cfg.train.name
    found = [v.value for v in Variant if (base / v.value / "metrics.parquet").exists() and (base / v.value / "checkpoint.pt").exists()]
    if not found:
        raise PipelineError(f"no trained variant under {base} (run pipeline.train first)")
    rows, histories, finals = [], {}, {}
    for variant in found:
        metrics = read_table(base / variant / "metrics.parquet")
        step, layers = final_stats(cfg, variant, base / variant / "checkpoint.pt")
        histories[variant], finals[variant] = metrics, layers
        rows.append(summarise(cfg, variant, metrics, step, layers))
        log.info("%s: step %d, val %.4f, max top1/median %.1f, first/median %.1f, Sink_1 %.2f, slot %.2f", variant, step,
                 rows[-1]["val_loss"], rows[-1]["max_top1_over_median"], rows[-1]["first_over_median"], rows[-1]["sink1"], rows[-1]["slot_attn"])
    table = pd.DataFrame(rows)
    write_table(table, base / "comparison.parquet", cfg)
    plot_emergence(histories, base / "emergence.png", cfg.figures.dpi)
    plot_layerwise(finals, base / "layerwise.png", cfg.figures.dpi)
    with tracking.stage_run(cfg, name=f"train_compare/{cfg.train.name}") as wb:
        wb.log({"comparison": tracking.table(table), "emergence": tracking.image(base / "emergence.png"),
                "layerwise": tracking.image(base / "layerwise.png")})


if __name__ == "__main__":
    cli.main("train_compare", run, config_name="train")
