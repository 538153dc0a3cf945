"""Every column the report shows: its heading (with the unit), its number format, once.

The report's tables (pipeline.html.table) show `label` as the heading, the column's own name on
hover (the `title` attribute: what to type in pandas), and each cell through its column's
format. A column that is not listed shows its own name and the table's default format.

    >>> label("ratio_at_peak"), cell("ratio_at_peak", 13499.03), cell("n_tokens", 4080), cell("mean_value", 24523.33)
    ('× median at peak', '13,500', '4,080', '24,523.3')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


def sig3(v: float) -> str:
    """Three significant digits, thousands separated: 13,500; 1.02; 0.000123.

        >>> sig3(13499.03), sig3(1.0248), sig3(-0.0001234)
        ('13,500', '1.02', '-0.000123')
    """
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) >= 100:
        return f"{round(v, 2 - int(math.floor(math.log10(abs(v))))):,.0f}"
    return f"{v:.3g}"


def magnitude(v: float) -> str:
    """An |a| or another magnitude: 1,234.5 from 10 up, three significant digits below."""
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def integer(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else magnitude(v)


FORMATS = {
    "int": integer,                                   # counts: 4,080
    "index": lambda v: str(int(v)) if float(v).is_integer() else magnitude(v),  # dims, layers, channels: 2533
    "abs": magnitude,                                 # |a|, values: 24,523.3
    "ratio": sig3,                                    # ratios and shares: 13,500, 1.02
    "ppl": lambda v: f"{v:,.2f}",                     # perplexity: 8,115.00
    "cos": lambda v: f"{v:.4f}",                      # cosines near 1: 0.9993
    "weight": lambda v: f"{v:,.4g}" if abs(v) < 10 else magnitude(v),
    "loss": lambda v: f"{v:.4f}",
}


@dataclass(frozen=True)
class Column:
    label: str
    kind: str | None = None  # a key of FORMATS; None: the table's default


C = Column
COLUMNS: dict[str, Column] = {
    # who and where
    "model": C("model"), "corpus": C("corpus"), "variant": C("variant"), "intervention": C("intervention"),
    "kind": C("kind"), "task": C("task"), "metric": C("metric"), "source": C("source"), "note": C("note"),
    "hook": C("hook"), "param": C("parameter"), "coordinate": C("coordinate"), "part": C("part"),
    "layers": C("blocks asked (layers)"), "blocks": C("blocks edited"), "dims": C("dims"), "verdict": C("verdict"),
    # detection
    "dim": C("dim", "index"), "role": C("token role"), "tokens": C("tokens"), "positions": C("positions"),
    "layer": C("layer", "index"), "block": C("block", "index"),
    "emerge_layer": C("emerges after block", "index"), "fade_layer": C("gone from block", "index"),
    "peak_layer": C("peak block", "index"), "n_layers_present": C("blocks present", "int"),
    "n_sequences": C("sequences", "int"), "mean_value": C("mean value at peak", "abs"),
    "std_value": C("std across sequences", "abs"), "median_abs_at_peak": C("median |a| at peak", "abs"),
    "ratio_at_peak": C("× median at peak", "ratio"), "median_abs": C("median |a|", "abs"), "top1_abs": C("top-1 |a|", "abs"),
    "top1_over_median": C("top-1 / median |a| (×)", "ratio"), "massive_per_sequence": C("massive entries per sequence", "ratio"),
    "massive_at": C("massive at: dim: token (sequences)"), "largest_mean_value": C("largest mean |a|", "abs"),
    "largest_ratio": C("largest × median", "ratio"), "found": C("found"), "roles": C("token roles"),
    # perplexity and interventions
    "perplexity": C("perplexity", "ppl"), "ratio": C("perplexity / baseline's (×)", "ratio"),
    "ratio_lo": C("ratio: 95% low", "ratio"), "ratio_hi": C("ratio: 95% high", "ratio"),
    "ppl_lo": C("perplexity: 95% low", "ppl"), "ppl_hi": C("perplexity: 95% high", "ppl"),
    "n_tokens": C("tokens", "int"), "n_chunks": C("chunks", "int"), "entries_changed": C("entries changed", "int"),
    "weights_changed": C("weights changed", "int"), "edited": C("edited"), "massive_abs": C("massive |a| at writing block", "abs"),
    "ablation": C("ablation: verdict (zero, perplexity × none)"), "sink_1_share": C("Sink₁ share of heads", "ratio"),
    # origins
    "contribution": C("contribution to the dim", "abs"), "value": C("value after the block", "abs"),
    "share": C("share", "ratio"), "writes": C("writes it"), "parallel": C("parallel attn/MLP"), "expert": C("expert", "index"),
    "channel": C("input channel", "index"), "input_value": C("input x at channel", "abs"),
    "input_ratio": C("input / median |x| (×)", "ratio"), "weight": C("weight w", "weight"), "abs_rank": C("|w| rank", "int"),
    "primary": C("super weight"),
    # vision
    "n_images": C("images", "int"), "cls_cosine": C("CLS cosine to none", "cos"), "cls_cosine_min": C("CLS cosine, min", "cos"),
    "cls_rel_change": C("CLS relative change", "ratio"), "top1": C("top-1 accuracy", "ratio"),
    "zeroshot_top1": C("CLIP zero-shot top-1", "ratio"),
    # retraining
    "step": C("step", "int"), "train_loss": C("train loss", "loss"), "val_loss": C("validation loss", "loss"),
    "max_top1_over_median": C("max top-1 / median (×)", "ratio"), "max_layer": C("at layer", "index"),
    "top1_at_first": C("top-1 at first token (share)", "ratio"), "first_abs": C("first token |a|", "abs"),
    "first_over_median": C("first token / median (×)", "ratio"), "first_attn": C("attention on first token", "ratio"),
    "slot_attn": C("attention on the bias slot", "ratio"), "sink1": C("Sink₁ share", "ratio"),
    "elapsed_min": C("time (min)", "ratio"), "massive": C("massive"),
    "optimizer": C("optimizer"), "decay": C("weight decay on"), "start": C("start token id"),
    "after_start": C("position 1"), "init": C("init"), "tie_head": C("tied head"), "n_layer": C("layers", "int"), "n_embd": C("width", "int"), "run": C("run"),
    "start_abs": C("start token |a|", "abs"), "start_over_median": C("start token |a| / median (×)", "ratio"),
    "start_layer": C("at layer", "index"), "start_over_median_sqrt_d": C("start |a| / (median × √width)", "ratio"),
    "top1_at_start": C("top-1 is the start token (share)", "ratio"),
    "block0_start_over_median": C("block 0: start |a| / median (×)", "ratio"),
    "block0_top1_at_start": C("block 0: top-1 is the start token (share)", "ratio"),
    "start_attn": C("block 0: attention on the start token", "ratio"),
    "matched_step": C("matched loss: step", "int"), "matched_reference_step": C("matched loss: default's step", "int"),
    "matched_val_gap": C("matched loss: val loss − default's", "loss"),
    "matched_contrast": C("matched loss: default's start ratio / this (×)", "ratio"),
    "val_loss_gap": C("val loss − default's", "loss"), "start_contrast": C("default's start ratio / this (×)", "ratio"),
}


def label(name: str) -> str:
    """The heading of a column: its label, or its own name when it is not listed."""
    return COLUMNS[name].label if name in COLUMNS else str(name)


def cell(name: str, v, default=magnitude) -> str:
    """One cell: '-' for a missing value, yes/no for a bool, a float through its column's format
    (or `default`), anything else as text."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return ", ".join(map(str, v))
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, float, np.integer, np.floating)):
        kind = COLUMNS[name].kind if name in COLUMNS else None
        if kind is not None:
            return FORMATS[kind](float(v))
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        return default(float(v)) if default else str(v)
    return str(v)
