"""Rule detect: which activations are massive, where, at which tokens, from which layer on.

An entry of the residual stream is massive when |a| > detect.min_abs and |a| > detect.min_ratio
x the median |a| of its layer and sequence (the paper: 100 and about 1000x). The candidates are
the capture's top-k entries; if a (layer, sequence) has as many massive entries as top_k, the
list may be truncated and a warning says so.

Each massive activation is identified by its feature dim and its token role: `first` (position
0), `delimiter` (a token whose text, stripped of spaces, is in detect.delimiters, or is only
newlines) or `other`; in a vision transformer (image data) `cls`, `register` or `patch`, from
the model's token layout (pipeline/images.py), with tokens named `[CLS]`, `[REG2]`, `patch 3,5`. Outputs in results/<model>/<corpus>/detect/:
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
A model without massive activations gets empty tables and "none found".
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline import cli, images, tracking
from pipeline.config import is_images
from pipeline.io import read_table, run_dir, write_json, write_table

log = logging.getLogger(__name__)


def role(position: int, token: str, delimiters: list[str]) -> str:
    if position == 0:
        return "first"
    stripped = token.strip(" \t")
    if stripped in delimiters or (token and set(token) <= {"\n", "\r", " ", "Ċ"} and "\n" in token):
        return "delimiter"
    return "other"


def find_massive(topk: pd.DataFrame, layer_stats: pd.DataFrame, min_abs: float, min_ratio: float,
                 delimiters: list[str], vision: bool = False) -> pd.DataFrame:
    """The massive entries among the capture's top-k, with their role and ratio to the median."""
    df = topk.merge(layer_stats[["layer", "seq_id", "median_abs"]], on=["layer", "seq_id"], how="left")
    df["ratio"] = df["abs_value"] / df["median_abs"].clip(lower=np.finfo(np.float32).tiny)
    df = df[(df["abs_value"] > min_abs) & (df["ratio"] > min_ratio)].copy()
    if vision:
        df["role"] = [images.role_of_name(t) for t in df["token"]]
    else:
        df["role"] = [role(p, t, list(delimiters)) for p, t in zip(df["position"], df["token"])]
    return df.reset_index(drop=True)


def summarise(massive: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """One row per (dim, role) of massive activations."""
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
    cols = ["dim", "role", "tokens", "positions", "emerge_layer", "fade_layer", "peak_layer", "n_layers_present",
            "n_sequences", "mean_value", "std_value", "median_abs_at_peak", "ratio_at_peak"]
    out = pd.DataFrame(rows, columns=cols)
    out["fade_layer"] = out["fade_layer"].astype("Int64")
    return out.sort_values(["emerge_layer", "dim"], kind="stable").reset_index(drop=True)


def per_layer(layer_stats: pd.DataFrame, massive: pd.DataFrame, vision: bool = False) -> pd.DataFrame:
    agg = layer_stats.groupby(["layer", "hook"], as_index=False).agg(median_abs=("median_abs", "mean"), top1_abs=("top1_abs", "mean"))
    agg["top1_over_median"] = agg["top1_abs"] / agg["median_abs"]
    n_seq = layer_stats["seq_id"].nunique()
    counts = massive.groupby("layer").size() if len(massive) else pd.Series(dtype=float)
    agg["massive_per_sequence"] = agg["layer"].map(counts).fillna(0) / n_seq
    at = {layer: where(g, quote=not vision) for layer, g in massive.groupby("layer")}
    agg["massive_at"] = [at.get(layer, "") for layer in agg["layer"]]
    return agg


def where(massive: pd.DataFrame, quote: bool = True, shown: int = 4) -> str:
    """Which dims and tokens hold the massive entries of one layer: "dim: token (sequences), ..."."""
    parts = []
    for dim, g in massive.groupby("dim"):
        counts = g.groupby("token")["seq_id"].nunique().sort_values(ascending=False, kind="stable")
        tokens = ", ".join(f"{t!r} ({n})" if quote else f"{t} ({n})" for t, n in counts.iloc[:shown].items())
        more = f", +{len(counts) - shown} more" if len(counts) > shown else ""
        parts.append(f"{dim}: {tokens}{more}")
    return "; ".join(parts)


def verdict(summary: pd.DataFrame, cfg: DictConfig) -> dict:
    if summary.empty:
        return {"found": False, "message": f"none found (no |a| > {cfg.detect.min_abs:g} and > {cfg.detect.min_ratio:g}x the layer median)"}
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


def run(cfg: DictConfig) -> None:
    cap = run_dir(cfg, "capture")
    topk = read_table(cap / "topk.parquet")
    layer_stats = read_table(cap / "layer_stats.parquet")
    n_layers = int(layer_stats["layer"].max()) + 1
    massive = find_massive(topk, layer_stats, cfg.detect.min_abs, cfg.detect.min_ratio, cfg.detect.delimiters,
                           vision=is_images(cfg.data))
    k = int(topk["rank"].max()) + 1
    full = massive.groupby(["layer", "seq_id"]).size()
    if len(full) and full.max() >= k:
        log.warning("some (layer, sequence) has %d massive entries = capture.top_k: raise top_k to see them all", k)
    summary = summarise(massive, n_layers)
    layers = per_layer(layer_stats, massive, vision=is_images(cfg.data))
    result = verdict(summary, cfg)
    out = run_dir(cfg, "detect")
    write_table(massive, out / "massive.parquet", cfg)
    write_table(summary, out / "summary.parquet", cfg)
    write_table(layers, out / "per_layer.parquet", cfg)
    write_json({**result, "model": cfg.model.name, "corpus": cfg.data.name, "n_layers": n_layers}, out / "summary.json")
    log.info("%s on %s: %s", cfg.model.name, cfg.data.name, result["message"])
    with tracking.stage_run(cfg) as wb:
        wb.summary.update({k: v for k, v in result.items() if not isinstance(v, list)})
        wb.log({"summary": tracking.table(summary), "per_layer": tracking.table(layers)})


if __name__ == "__main__":
    cli.main("detect", run)
