"""The comparison of trained variants: one row per variant (`summarise`) and its contrast to the
reference variant at the final step and at matched loss (`contrast`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from massive.measure.detect import MIN_ABS, MIN_RATIO
from massive.retrain.gpt import GPTConfig


def summarise(
    variant: str,
    metrics: pd.DataFrame,
    step: int,
    layers: list[dict],
    min_abs: float = MIN_ABS,
    min_ratio: float = MIN_RATIO,
    config: GPTConfig | None = None,
    setup: dict | None = None,
) -> dict:
    """One comparison row for a trained variant: the losses of its last evaluation (`metrics`) and the
    `emergence` rows of its final weights (`layers`).

    The start token's largest |a| over the median (`start_over_median`) is taken at the layer where
    it is largest (`start_layer`), beside it the same over sqrt(n_embd), the share of sequences whose
    top-1 entry is the start token there, and block 0's values; the attention sink is block 0's (the
    attention later queries pay to position 0, and to the bias slot), Sink_1 over all heads, and
    the start token's value-state norm over the median token's per layer ("value drain").
    `massive` when top-1 |a| > min_abs and top-1/median > min_ratio (the paper's thresholds; tiny
    models rarely pass them: read the ratios). `setup` (e.g. optimizer, decay, start, after_start,
    dtype) and `config` (n_layer, n_embd, init, tie_head) are recorded in the row: the regime the
    variant was trained in.

        >>> row = summarise("attn_bias", metrics, 2000, emergence(model, probe))   # doctest: +SKIP
    """
    last = metrics[metrics["step"] == metrics["step"].max()].iloc[0]
    top = max(layers, key=lambda r: r["top1_over_median"])
    start = max(layers, key=lambda r: r["start_over_median"])
    b0 = layers[0]
    row = {"variant": variant, **(setup or {})}
    if config is not None:
        row.update(
            {"n_layer": config.n_layer, "n_embd": config.n_embd, "init": config.init, "tie_head": config.tie_head}
        )
    row.update(
        {
            "step": step,
            "train_loss": float(last["train_loss"]),
            "val_loss": float(last["val_loss"]),
            "start_abs": start["start_abs"],
            "start_over_median": start["start_over_median"],
            "start_layer": start["layer"],
            "start_over_median_sqrt_d": start["start_over_median_sqrt_d"],
            "top1_at_start": start["top1_at_start"],
            "block0_start_over_median": b0["start_over_median"],
            "block0_top1_at_start": b0["top1_at_start"],
            "start_attn": b0["first_attn"],
            "slot_attn": b0["slot_attn"],
            "sink1": b0["sink1"],
            "top1_abs": max(r["top1_abs"] for r in layers),
            "max_top1_over_median": top["top1_over_median"],
            "max_layer": top["layer"],
            "elapsed_min": float(last["elapsed_s"]) / 60,
        }
    )
    row["massive"] = bool(row["top1_abs"] > min_abs and row["max_top1_over_median"] > min_ratio)
    for r in layers:
        row[f"layer{r['layer']}_start_over_median"] = r["start_over_median"]
        row[f"layer{r['layer']}_start_value_ratio"] = r["start_value_ratio"]
        row[f"layer{r['layer']}_first_attn"] = r["first_attn"]
    return row


def contrast(
    table: pd.DataFrame, histories: dict[str, pd.DataFrame] | None = None, reference: str = "default"
) -> pd.DataFrame:
    """`table` (one `summarise` row per variant) with the comparison to the `reference` variant.

    At the final step: `val_loss_gap` (this variant's validation loss minus the reference's) and
    `start_contrast` (the reference's start-token |a| / median over this variant's). At matched
    loss, from the evaluation `histories` (each variant's metrics table): the pair's loss level is
    the worse final validation loss of the two; the better model is taken at its first evaluation
    that reaches it, the worse at its final step. `matched_step` / `matched_reference_step` are
    those steps, `matched_val_gap` the loss difference there (this minus the reference) and
    `matched_contrast` the reference's start-token ratio over this variant's there. The paper's claim
    is a large contrast at a gap near 0. Without the reference variant the columns are NaN.

        >>> t = pd.DataFrame({"variant": ["default", "attn_bias"], "val_loss": [2.80, 2.81], "start_over_median": [40.0, 10.0]})
        >>> contrast(t)[["val_loss_gap", "start_contrast"]].round(3).values.tolist()
        [[0.0, 1.0], [0.01, 4.0]]
    """
    out = table.copy()
    matched = ["matched_step", "matched_reference_step", "matched_val_gap", "matched_contrast"]
    ref = out[out["variant"] == reference]
    if ref.empty:
        for col in ["val_loss_gap", "start_contrast", *matched]:
            out[col] = np.nan
        return out
    r = ref.iloc[0]
    out["val_loss_gap"] = out["val_loss"] - r["val_loss"]
    out["start_contrast"] = r["start_over_median"] / out["start_over_median"]
    if not histories or reference not in histories:
        return out

    def per_step(variant):  # step -> (val loss, start-token ratio: the largest over layers)
        return histories[variant].groupby("step").agg(val=("val_loss", "first"), start=("start_over_median", "max"))

    ref_steps = per_step(reference)
    rows = {c: [] for c in matched}
    for _, row in out.iterrows():
        if row["variant"] not in histories:
            for c in matched:
                rows[c].append(np.nan)
            continue
        mine = per_step(row["variant"])
        level = max(ref_steps["val"].iloc[-1], mine["val"].iloc[-1])
        at = {}
        for name, steps in (("ref", ref_steps), ("mine", mine)):
            reached = steps[steps["val"] <= level + 1e-12]
            at[name] = reached.index[0] if len(reached) else steps.index[-1]
        rows["matched_step"].append(int(at["mine"]))
        rows["matched_reference_step"].append(int(at["ref"]))
        rows["matched_val_gap"].append(float(mine.loc[at["mine"], "val"] - ref_steps.loc[at["ref"], "val"]))
        rows["matched_contrast"].append(float(ref_steps.loc[at["ref"], "start"] / mine.loc[at["mine"], "start"]))
    for c in matched:
        out[c] = rows[c]
    return out
