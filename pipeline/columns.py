"""Every column the report shows: its heading (with the unit), its number format, once.

The report's tables (pipeline.html.table) show `label` as the heading, the column's own name on
hover (the `title` attribute: what to type in pandas), and each cell through its column's
format. A column that is not listed shows its own name and the table's default format.

    >>> label("ratio_at_peak"), cell("ratio_at_peak", 13499.03), cell("n_tokens", 4080), cell("mean_value", 24523.33)
    ('× median at peak', '13,500', '4,080', '24,523.3')

Key columns (`key=True`: ratios, intervals, verdicts) are the ones a table is read for: the report
keeps them inside the page's width (tests/e2e/test_browser.py checks it at 1,200 px).
"""

from __future__ import annotations

import math
import re
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


def perplexity(v: float) -> str:
    """A perplexity: 2 decimals below 1,000, whole numbers above (a destroyed model's 1,026,793).

    >>> perplexity(33.3222), perplexity(1026792.87)
    ('33.32', '1,026,793')
    """
    return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"


FORMATS = {
    "int": integer,  # counts: 4,080
    "index": lambda v: str(int(v)) if float(v).is_integer() else magnitude(v),  # dims, layers, channels: 2533
    "abs": magnitude,  # |a|, values: 24,523.3
    "ratio": sig3,  # ratios and shares: 13,500, 1.02
    "ppl": perplexity,  # perplexity: 33.32, 8,115
    "cos": lambda v: f"{v:.4f}",  # cosines near 1: 0.9993
    "weight": lambda v: f"{v:,.4g}" if abs(v) < 10 else magnitude(v),
    "loss": lambda v: f"{v:.4f}",
    "share": lambda v: f"{v:.2f}",  # shares and attention mass in [0, 1]: 0.55
}


@dataclass(frozen=True)
class Column:
    label: str
    kind: str | None = None  # a key of FORMATS; None: the table's default
    key: bool = False  # a column the table is read for (ratio, interval, verdict): never hidden in scroll


C = Column
COLUMNS: dict[str, Column] = {
    # who and where
    "model": C("model"),
    "corpus": C("corpus"),
    "variant": C("variant"),
    "intervention": C("intervention"),
    "kind": C("kind"),
    "task": C("task"),
    "metric": C("metric"),
    "source": C("source"),
    "note": C("note"),
    "hook": C("hook"),
    "param": C("parameter"),
    "coordinate": C("coordinate"),
    "part": C("part"),
    "layers": C("blocks asked (layers)"),
    "blocks": C("blocks edited"),
    "dims": C("dims"),
    "verdict": C("verdict", key=True),
    "effect": C("effect", key=True),
    "run": C("run"),
    "protocol": C("protocol"),
    "label": C("configuration"),
    "scheme": C("scheme"),
    # detection
    "dim": C("dim", "index"),
    "role": C("token role"),
    "tokens": C("tokens"),
    "positions": C("positions"),
    "layer": C("layer", "index"),
    "block": C("block", "index"),
    "emerge_layer": C("emerges after block", "index"),
    "fade_layer": C("gone from block", "index"),
    "peak_layer": C("peak block", "index"),
    "n_layers_present": C("blocks present", "int"),
    "n_sequences": C("sequences", "int"),
    "mean_value": C("mean value at peak", "abs"),
    "std_value": C("std across sequences", "abs"),
    "median_abs_at_peak": C("median |a| at peak", "abs"),
    "ratio_at_peak": C("× median at peak", "ratio", key=True),
    "median_abs": C("median |a|", "abs"),
    "top1_abs": C("top-1 |a|", "abs"),
    "top1_over_median": C("top-1 / median |a| (×)", "ratio"),
    "massive_per_sequence": C("massive entries per sequence", "ratio"),
    "massive_at": C("massive at: dim: token (sequences)"),
    "largest_mean_value": C("largest mean |a|", "abs"),
    "largest_ratio": C("largest × median", "ratio", key=True),
    "found": C("found"),
    "roles": C("token roles"),
    # perplexity and interventions
    "perplexity": C("perplexity", "ppl"),
    "ratio": C("perplexity / baseline's (×)", "ratio", key=True),
    "ppl_interval": C("perplexity, 95% interval"),
    "ratio_interval": C("× none, 95% interval", key=True),
    "zeroed": C("perplexity, zeroed", "ppl"),
    "model_bos": C("model.bos"),
    "tokenizer_adds_bos": C("tokenizer adds BOS"),
    "mass_first_mean": C("attention on first token", "share"),
    "ratio_lo": C("ratio: 95% low", "ratio"),
    "ratio_hi": C("ratio: 95% high", "ratio"),
    "ppl_lo": C("perplexity: 95% low", "ppl"),
    "ppl_hi": C("perplexity: 95% high", "ppl"),
    "n_tokens": C("tokens", "int"),
    "n_chunks": C("chunks", "int"),
    "entries_changed": C("entries changed", "int"),
    "weights_changed": C("weights changed", "int"),
    "edited": C("edited"),
    "massive_abs": C("massive |a| at writing block", "abs"),
    "ablation": C("ablation: verdict (zero, perplexity × none)", key=True),
    "sink_1_share": C("Sink₁ share of heads", "share"),
    # origins
    "contribution": C("contribution to the dim", "abs"),
    "value": C("value after the block", "abs"),
    "share": C("share", "ratio"),
    "writes": C("writes it"),
    "parallel": C("parallel attn/MLP"),
    "expert": C("expert", "index"),
    "channel": C("input channel", "index"),
    "input_value": C("input x at channel", "abs"),
    "input_ratio": C("input / median |x| (×)", "ratio"),
    "weight": C("weight w", "weight"),
    "abs_rank": C("|w| rank", "int"),
    "primary": C("super weight"),
    # vision
    "n_images": C("images", "int"),
    "cls_cosine": C("CLS cosine to none", "cos", key=True),
    "cls_cosine_min": C("CLS cosine, min", "cos"),
    "cls_rel_change": C("CLS relative change", "ratio"),
    "top1": C("top-1 accuracy", "ratio"),
    "zeroshot_top1": C("CLIP zero-shot top-1", "ratio"),
    # retraining
    "step": C("step", "int"),
    "train_loss": C("train loss", "loss"),
    "val_loss": C("validation loss", "loss"),
    "max_top1_over_median": C("max top-1 / median (×)", "ratio"),
    "max_layer": C("at layer", "index"),
    "top1_at_first": C("top-1 at first token (share)", "ratio"),
    "first_abs": C("first token |a|", "abs"),
    "first_over_median": C("first token / median (×)", "ratio"),
    "first_attn": C("attention on first token", "ratio"),
    "slot_attn": C("attention on the bias slot", "ratio"),
    "sink1": C("Sink₁ share", "ratio"),
    "elapsed_min": C("time (min)", "ratio"),
    "massive": C("massive"),
    "optimizer": C("optimizer"),
    "decay": C("weight decay on"),
    "start": C("start token id"),
    "after_start": C("position 1"),
    "init": C("init"),
    "tie_head": C("tied head"),
    "n_layer": C("layers", "int"),
    "n_embd": C("width", "int"),
    "start_abs": C("start token |a|", "abs"),
    "start_over_median": C("start token |a| / median (×)", "ratio"),
    "start_layer": C("at layer", "index"),
    "start_over_median_sqrt_d": C("start |a| / (median × √width)", "ratio"),
    "top1_at_start": C("top-1 is the start token (share)", "ratio"),
    "block0_start_over_median": C("block 0: start |a| / median (×)", "ratio"),
    "block0_top1_at_start": C("block 0: top-1 is the start token (share)", "ratio"),
    "start_attn": C("block 0: attention on the start token", "ratio"),
    "matched_step": C("matched loss: step", "int"),
    "matched_reference_step": C("matched loss: default's step", "int"),
    "matched_val_gap": C("matched loss: val loss − default's", "loss"),
    "matched_contrast": C("matched loss: default's start ratio / this (×)", "ratio", key=True),
    "val_loss_gap": C("val loss − default's", "loss"),
    "start_contrast": C("default's start ratio / this (×)", "ratio", key=True),
    # inference
    "format": C("format"),
    "max_abs": C("max |a|", "abs"),
    "limit": C("largest finite value", "abs"),
    "headroom": C("headroom (×)", "ratio", key=True),
    "spacing": C("spacing at max |a|", "weight"),
    "relative_spacing": C("relative spacing", "ratio"),
    "overflow": C("overflows"),
    "overflow_dims": C("overflowing dims"),
    "measured_max_abs": C("measured max |a|", "abs"),
    "measured_inf": C("inf", "int"),
    "measured_nan": C("NaN", "int"),
    "first_nonfinite": C("first inf/NaN block"),
    "rel_error": C("relative error", "ratio"),
    "kept": C("kept in float", "int"),
    "bits": C("bits", "int"),
    "granularity": C("granularity"),
    "keep": C("keep"),
    "tensors": C("tensors", "int"),
    "window": C("window W"),
    "sinks": C("sinks S", "int"),
    "sink_massive": C("sinks' massive activations"),
    # retrofit
    "arm": C("arm"),
    "params": C("parameters", "int"),
    "ratio_to_intact": C("perplexity / intact (×)", "ratio", key=True),
    "ratio_set_back": C("× the ablated model", "ratio", key=True),
    # outlier features
    "criterion": C("criterion"),
    "n_layers": C("layers", "int"),
    "layer_share": C("share of layers", "share"),
    "first_layer": C("first layer", "index"),
    "last_layer": C("last layer", "index"),
    "token_share": C("share of tokens", "share"),
    "max_token_share": C("largest share of tokens", "share"),
    "massive_token_share": C("share of tokens massive", "share"),
    "dense_layers": C("dense in layers"),
    "also_massive": C("also massive"),
    "n_outlier_dims": C("outlier feature dims", "int"),
    "dense_dims": C("dense (massive at most tokens)"),
    "shared_dims": C("shared dims"),
    "outlier_dims": C("outlier feature dims here"),
    "dtype": C("dtype"),
    "seed": C("seed"),
    "start_value_ratio": C("start token's value norm / median token's (×)", "ratio"),
    # the paper's reference tables: one column per intervention (perplexity, or ImageNet top-1 for the ViTs)
    "none": C("none"),
    "zero": C("zero"),
    "mean": C("mean"),
    "fix_register_mean": C("fix_register_mean"),
    "massive_dims": C("massive dims"),
    "saturated": C("saturated"),
}


def column(name: str) -> Column | None:
    """A column's entry; a pivoted column named '<prefix>: <column>' (e.g. 'float16: headroom') takes its column's
    format and key, with the prefix in front of its label."""
    if name in COLUMNS:
        return COLUMNS[name]
    per_layer = re.fullmatch(r"layer(\d+)_(.+)", str(name))  # a statistic per block (retraining: layer0_first_attn)
    if per_layer and per_layer.group(2) in COLUMNS:
        c = COLUMNS[per_layer.group(2)]
        return Column(f"block {per_layer.group(1)}: {c.label}", c.kind, c.key)
    prefix, _, base = str(name).rpartition(": ")
    if prefix and base in COLUMNS:
        c = COLUMNS[base]
        return Column(f"{prefix}: {c.label}", c.kind, c.key)
    return None


def label(name: str) -> str:
    """The heading of a column: its label, or its own name when it is not listed.

    >>> label("float16: headroom")
    'float16: headroom (×)'
    """
    c = column(name)
    return c.label if c is not None else str(name)


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
        c = column(name)
        kind = c.kind if c is not None else None
        if kind is not None:
            return FORMATS[kind](float(v))
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        return default(float(v)) if default else str(v)
    return str(v)


def is_key(name: str) -> bool:
    """Whether a column is one a table is read for (a ratio, an interval, a verdict)."""
    c = column(name)
    return c is not None and c.key
