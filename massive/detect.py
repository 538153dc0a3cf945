"""Which activations are massive, where, at which tokens, from which layer on.

An entry of the residual stream is massive when |a| > min_abs and |a| > min_ratio x the median
|a| of its layer and sequence (the paper: 100 and about 1000x). The candidates are the capture's
top-k entries; when a (layer, sequence) has as many massive entries as k, the list may be
truncated: the Detection says so (`capped`, and a log warning).

Each massive activation is identified by its feature dim and its token role: `first` (position
0), `delimiter` (a token whose text, stripped of spaces, is one of `delimiters`, or is only line
breaks) or `other`; in a vision transformer `cls`, `register` or `patch`, from the layout names
the capture gave its tokens (`[CLS]`, `[REG2]`, `patch 3,5`). Nothing per model is configured.

    >>> import massive
    >>> found = massive.detect(massive.capture(model, ids, k=64, tok=tok), min_abs=100, min_ratio=1000)
    >>> found.result["message"]
    '2 massive activation(s) in dim(s) [247, 507] at first token(s), emerging after block 11; ...'
    >>> found.summary[["dim", "role", "emerge_layer", "ratio_at_peak"]]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from massive.arch import is_newline_token, role_of_name

log = logging.getLogger(__name__)

DELIMITERS = (".", ",", ";", ":", "!", "?", "\n", "\n\n", "<s>", "</s>")
SUMMARY_COLUMNS = ["dim", "role", "tokens", "positions", "emerge_layer", "fade_layer", "peak_layer", "n_layers_present",
                   "n_sequences", "mean_value", "std_value", "median_abs_at_peak", "ratio_at_peak"]


@dataclass
class Detection:
    """What detection found.

    massive    every massive entry: the topk columns + median_abs, ratio, role
    summary    one row per (dim, role): tokens, positions, emerge_layer, fade_layer (null: lasts
               to the last block), peak_layer, n_layers_present, n_sequences, mean_value,
               std_value, median_abs_at_peak, ratio_at_peak
    per_layer  one row per layer: layer, hook, median_abs, top1_abs, top1_over_median,
               massive_per_sequence, massive_at ("dim: token (sequences), ...")
    result     found, message, and where found dims, roles, emerge_layer, largest_mean_value,
               largest_ratio (detect/summary.json, without model, corpus, n_layers)
    capped     some (layer, sequence) has k massive entries: there may be more than the top-k show
    """

    massive: pd.DataFrame
    summary: pd.DataFrame
    per_layer: pd.DataFrame
    result: dict
    n_layers: int
    k: int
    capped: bool = False
    thresholds: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.result["found"])

    @property
    def dims(self) -> list[int]:
        """The feature dims that hold massive activations (sorted)."""
        return sorted(int(d) for d in self.summary["dim"].unique())

    @property
    def emerge_layer(self) -> int | None:
        """The first block after which a massive activation is found (None: none found)."""
        return int(self.summary["emerge_layer"].min()) if len(self.summary) else None


def role(position: int, token: str, delimiters: Sequence[str] = DELIMITERS) -> str:
    """The role of a text token: "first" (position 0), "delimiter" or "other".

        >>> role(0, "The"), role(5, " ."), role(5, "\\n\\n"), role(5, " cat")
        ('first', 'delimiter', 'delimiter', 'other')
    """
    if position == 0:
        return "first"
    if token.strip(" \t") in delimiters or is_newline_token(token):
        return "delimiter"
    return "other"


def find_massive(topk: pd.DataFrame, layer_stats: pd.DataFrame, min_abs: float = 100.0, min_ratio: float = 1000.0,
                 delimiters: Sequence[str] = DELIMITERS, vision: bool = False) -> pd.DataFrame:
    """The massive entries among the capture's top-k, with their ratio to the median and role.

        >>> find_massive(stats.topk, stats.layer_stats)[["layer", "dim", "token", "ratio", "role"]].head(1)
    """
    df = topk.merge(layer_stats[["layer", "seq_id", "median_abs"]], on=["layer", "seq_id"], how="left")
    df["ratio"] = df["abs_value"] / df["median_abs"].clip(lower=np.finfo(np.float32).tiny)
    df = df[(df["abs_value"] > min_abs) & (df["ratio"] > min_ratio)].copy()
    if vision:
        df["role"] = [role_of_name(t) for t in df["token"]]
    else:
        delimiters = list(delimiters)
        df["role"] = [role(p, t, delimiters) for p, t in zip(df["position"], df["token"])]
    return df.reset_index(drop=True)


def summarise(massive: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """One row per (dim, role) of massive activations (columns: SUMMARY_COLUMNS), by emergence.

        >>> summarise(find_massive(stats.topk, stats.layer_stats), n_layers=30)[["dim", "emerge_layer"]]
    """
    rows = []
    for (dim, rl), g in massive.groupby(["dim", "role"], sort=True):
        layers = sorted(g["layer"].unique())
        by_layer = g.groupby("layer").agg(n=("seq_id", "nunique"), mean_abs=("abs_value", "mean"))
        peak = int(by_layer.sort_values(["n", "mean_abs"], ascending=False).index[0])  # most sequences, then largest
        at_peak = g[g["layer"] == peak].groupby("seq_id").agg(value=("value", "mean"), median_abs=("median_abs", "mean"))
        tokens = g["token"].value_counts()
        rows.append({
            "dim": int(dim),
            "role": rl,
            "tokens": ", ".join(repr(t) for t in tokens.index[:5]),
            "positions": ", ".join(str(p) for p in sorted(g["position"].unique())[:5]),
            "emerge_layer": int(layers[0]),
            "fade_layer": None if layers[-1] == n_layers - 1 else int(layers[-1]) + 1,
            "peak_layer": peak,
            "n_layers_present": len(layers),
            "n_sequences": int(by_layer.loc[peak, "n"]),
            "mean_value": float(at_peak["value"].mean()),
            "std_value": float(at_peak["value"].std(ddof=0)),
            "median_abs_at_peak": float(at_peak["median_abs"].mean()),
            "ratio_at_peak": float(abs(at_peak["value"]).mean() / at_peak["median_abs"].mean()),
        })
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["fade_layer"] = out["fade_layer"].astype("Int64")
    return out.sort_values(["emerge_layer", "dim"], kind="stable").reset_index(drop=True)


def where(massive: pd.DataFrame, quote: bool = True, shown: int = 4) -> str:
    """Which dims and tokens hold the massive entries of one layer: "dim: token (sequences), ...".

        >>> where(found.massive[found.massive.layer == 11])
        "247: '<s>' (16); 507: '<s>' (16)"
    """
    parts = []
    for dim, g in massive.groupby("dim"):
        counts = g.groupby("token")["seq_id"].nunique().sort_values(ascending=False, kind="stable")
        tokens = ", ".join(f"{t!r} ({n})" if quote else f"{t} ({n})" for t, n in counts.iloc[:shown].items())
        more = f", +{len(counts) - shown} more" if len(counts) > shown else ""
        parts.append(f"{dim}: {tokens}{more}")
    return "; ".join(parts)


def per_layer(layer_stats: pd.DataFrame, massive: pd.DataFrame, vision: bool = False) -> pd.DataFrame:
    """One row per layer: mean median |a|, mean top-1 |a|, their ratio, massive entries per
    sequence, and where they are (`where`; tokens quoted for text, plain layout names for ViTs).

        >>> per_layer(stats.layer_stats, found.massive).loc[11, "massive_at"]
    """
    agg = layer_stats.groupby(["layer", "hook"], as_index=False).agg(median_abs=("median_abs", "mean"), top1_abs=("top1_abs", "mean"))
    agg["top1_over_median"] = agg["top1_abs"] / agg["median_abs"]
    n_seq = layer_stats["seq_id"].nunique()
    counts = massive.groupby("layer").size() if len(massive) else pd.Series(dtype=float)
    agg["massive_per_sequence"] = agg["layer"].map(counts).fillna(0) / n_seq
    at = {layer: where(g, quote=not vision) for layer, g in massive.groupby("layer")}
    agg["massive_at"] = [at.get(layer, "") for layer in agg["layer"]]
    return agg


def verdict(summary: pd.DataFrame, min_abs: float = 100.0, min_ratio: float = 1000.0) -> dict:
    """found (bool), a one-line message, and (when found) the numbers a report quotes.

        >>> verdict(summarise(massive.iloc[:0], 4))
        {'found': False, 'message': 'none found (no |a| > 100 and > 1000x the layer median)'}
    """
    if summary.empty:
        return {"found": False, "message": f"none found (no |a| > {min_abs:g} and > {min_ratio:g}x the layer median)"}
    top = summary.loc[summary["ratio_at_peak"].idxmax()]
    dims = sorted(summary["dim"].unique().tolist())
    roles = sorted(summary["role"].unique().tolist())
    return {
        "found": True,
        "dims": dims,
        "roles": roles,
        "emerge_layer": int(summary["emerge_layer"].min()),
        "largest_mean_value": float(top["mean_value"]),
        "largest_ratio": float(top["ratio_at_peak"]),
        "message": (f"{len(summary)} massive activation(s) in dim(s) {dims} at {', '.join(roles)} token(s), "
                    f"emerging after block {int(summary['emerge_layer'].min())}; largest {abs(top['mean_value']):.0f} "
                    f"= {top['ratio_at_peak']:.0f}x the median |a| (block {int(top['peak_layer'])})"),
    }


def _tables(stats) -> tuple[pd.DataFrame, pd.DataFrame, bool | None]:
    if isinstance(stats, Mapping):
        return stats["topk"], stats["layer_stats"], stats.get("vision")
    return stats.topk, stats.layer_stats, getattr(stats, "vision", None)


def detect(stats, min_abs: float = 100.0, min_ratio: float = 1000.0, delimiters: Sequence[str] = DELIMITERS,
           vision: bool | None = None) -> Detection:
    """Detection on a capture: a massive.capture.Capture, or any object or mapping with its
    `topk` and `layer_stats` tables (e.g. read back from Parquet). `vision` (None: the capture's
    own flag) names the roles by the ViT layout.

        >>> found = detect(stats, min_abs=100, min_ratio=1000)
        >>> found.found, found.dims, found.emerge_layer
        (True, [247, 507], 11)
        >>> detect({"topk": topk, "layer_stats": layer_stats}).summary.empty
        True
    """
    topk, layer_stats, own_vision = _tables(stats)
    vision = bool(own_vision) if vision is None else vision
    n_layers = int(layer_stats["layer"].max()) + 1
    k = int(topk["rank"].max()) + 1
    massive = find_massive(topk, layer_stats, min_abs, min_ratio, delimiters, vision=vision)
    full = massive.groupby(["layer", "seq_id"]).size()
    capped = bool(len(full) and full.max() >= k)
    if capped:
        log.warning("some (layer, sequence) has %d massive entries = the capture's top-k: raise top_k to see them all", k)
    summary = summarise(massive, n_layers)
    return Detection(massive=massive, summary=summary, per_layer=per_layer(layer_stats, massive, vision=vision),
                     result=verdict(summary, min_abs, min_ratio), n_layers=n_layers, k=k, capped=capped,
                     thresholds={"min_abs": min_abs, "min_ratio": min_ratio})
