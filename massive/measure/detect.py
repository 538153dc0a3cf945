"""Which activations are massive, where, at which tokens, from which layer on.

An entry of the residual stream is massive when |a| > min_abs and |a| > min_ratio x the median
|a| of its layer and sequence (the paper: 100 and about 1000x). The candidates are the capture's
top-k entries; the capture also counted exactly how many entries pass (layer_stats.n_massive), so
when more pass than the top-k holds the Detection says "saturated" with the count (`saturation`,
`capped`, the per_layer column `saturated`, the verdict), never a silently capped number.

Massive activations sit at a few tokens. A (layer, dim) whose entries pass both thresholds at
more than `massive_max_share` of the tokens is an outlier feature instead, reported with its
share of tokens, not as "massive at delimiter/other tokens". Outlier features in the sense of
Dettmers et al. 2022 (LLM.int8()): dims with |a| > outlier_abs (6) at >= outlier_token_share (6%)
of the positions in >= outlier_layer_share (25%) of the layers, from the capture's per-(layer,
dim) counts (on the raw residual stream, whose scale grows with depth, |a| must also be above
the capture's outlier_ratio x the median: Dettmers' 6 is in units of a normalised hidden state) (`outliers`; the dims they share with the massive activations: result["shared_dims"]).

Each massive activation is identified by its feature dim and its token role: `bos` (the BOS
token that begins every sequence, when the run's protocol has one), `first` (the first text
token: position 0, or 1 after a BOS), `delimiter` (a token whose text, stripped of spaces, is one
of `delimiters`, or is only line breaks) or `other`; in a vision transformer `cls`, `register` or
`patch`, from the layout names the capture gave its tokens (`[CLS]`, `[REG2]`, `patch 3,5`).
Nothing per model is configured.

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

from massive.core.errors import MassiveError
from massive.core.tokens import is_newline_token, role_of_name

log = logging.getLogger(__name__)

MIN_ABS = 100.0  # the paper's rule (Sun et al. 2024): massive when |a| is above this ...
MIN_RATIO = 1000.0  # ... and above this multiple of its layer's median |a| (the one definition of the defaults)


def thresholds(found) -> tuple[float, float]:
    """(min_abs, min_ratio) a detection result records (its `thresholds` dict, or attributes), else
    the paper's MIN_ABS and MIN_RATIO.

        >>> thresholds(None)
        (100.0, 1000.0)
    """
    th = getattr(found, "thresholds", None)
    th = th if isinstance(th, dict) else {}
    out = []
    for key, default in (("min_abs", MIN_ABS), ("min_ratio", MIN_RATIO)):
        value = th.get(key)
        if value is None:
            value = getattr(found, key, None)
        out.append(float(default if value is None or callable(value) else value))
    return out[0], out[1]


DELIMITERS = (".", ",", ";", ":", "!", "?", "\n", "\n\n", "<s>", "</s>")
SUMMARY_COLUMNS = [
    "dim",
    "role",
    "tokens",
    "positions",
    "emerge_layer",
    "fade_layer",
    "peak_layer",
    "n_layers_present",
    "n_sequences",
    "mean_value",
    "std_value",
    "median_abs_at_peak",
    "ratio_at_peak",
    "saturated",
]
OUTLIER_COLUMNS = [
    "dim",
    "criterion",
    "n_layers",
    "layer_share",
    "first_layer",
    "last_layer",
    "token_share",
    "max_token_share",
    "massive_token_share",
    "dense_layers",
    "max_abs",
    "also_massive",
]


@dataclass
class Detection:
    """What detection found.

    massive    every massive entry: the topk columns + median_abs, ratio, role
    summary    one row per (dim, role): tokens, positions, emerge_layer, fade_layer (null: lasts
               to the last block), peak_layer, n_layers_present, n_sequences, mean_value,
               std_value, median_abs_at_peak, ratio_at_peak, saturated (some of its layers hold
               more massive entries than the top-k: the row may miss some)
    per_layer  one row per layer: layer, hook, median_abs, top1_abs, top1_over_median,
               massive_per_sequence (exact, from the capture's counts), massive_at ("dim: token
               (sequences), ..."), outlier_dims (dims dense there: massive at most tokens, not
               listed in massive_at), saturated ("" or "saturated: N pass, top-k keeps k")
    result     found, message, and where found dims, roles, emerge_layer, largest_mean_value,
               largest_ratio; outlier_dims, shared_dims, saturated (detect/summary.json, without
               model, corpus, n_layers)
    outliers   one row per outlier feature dim (OUTLIER_COLUMNS): criterion (llm_int8: Dettmers'
               thresholds; dense_massive: massive at most tokens of some layer; or both), the
               layers and share of tokens where it is large, and whether it is also massive
    capped     some (layer, sequence) has more massive entries than the top-k holds (saturated)
    saturation per (layer, sequence) where that happens: layer, seq_id, n_massive, k
    """

    massive: pd.DataFrame
    summary: pd.DataFrame
    per_layer: pd.DataFrame
    result: dict
    n_layers: int
    k: int
    capped: bool = False
    thresholds: dict = field(default_factory=dict)
    outliers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=OUTLIER_COLUMNS))
    saturation: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["layer", "seq_id", "n_massive", "k"])
    )

    @property
    def found(self) -> bool:
        return bool(self.result["found"])

    def save(self, folder, meta: dict | None = None, summary_extra: dict | None = None):
        """The files the detect rule writes (massive/core/results.py); `meta`: more schema metadata."""
        from massive.core.results import save_detection

        return save_detection(self, folder, meta, summary_extra)

    @classmethod
    def load(cls, folder, k: int | None = None, thresholds: dict | None = None) -> "Detection":
        """A detection saved with `save`, or a pipeline run's detect folder."""
        from massive.core.results import load_detection

        return load_detection(folder, cls, k, thresholds)

    @property
    def dims(self) -> list[int]:
        """The feature dims that hold massive activations (sorted)."""
        return sorted(int(d) for d in self.summary["dim"].unique())

    @property
    def emerge_layer(self) -> int | None:
        """The first block after which a massive activation is found (None: none found)."""
        return int(self.summary["emerge_layer"].min()) if len(self.summary) else None


def role(position: int, token: str, delimiters: Sequence[str] = DELIMITERS, bos: bool = False) -> str:
    """The role of a text token: "bos" (position 0 of a sequence that begins with the BOS token:
    `bos`), "first" (the first text token: position 0, or 1 after a BOS), "delimiter" or "other".

        >>> role(0, "The"), role(5, " ."), role(5, "\\n\\n"), role(5, " cat")
        ('first', 'delimiter', 'delimiter', 'other')
        >>> role(0, "<s>", bos=True), role(1, "The", bos=True)
        ('bos', 'first')
    """
    if bos and position == 0:
        return "bos"
    if position == int(bos):
        return "first"
    if token.strip(" \t") in delimiters or is_newline_token(token):
        return "delimiter"
    return "other"


def find_massive(
    topk: pd.DataFrame,
    layer_stats: pd.DataFrame,
    min_abs: float = MIN_ABS,
    min_ratio: float = MIN_RATIO,
    delimiters: Sequence[str] = DELIMITERS,
    vision: bool = False,
    bos: bool = False,
) -> pd.DataFrame:
    """The massive entries among the capture's top-k, with their ratio to the median and role
    (`bos`: every sequence begins with the BOS token, role "bos").

        >>> find_massive(stats.topk, stats.layer_stats)[["layer", "dim", "token", "ratio", "role"]].head(1)
    """
    df = topk.merge(layer_stats[["layer", "seq_id", "median_abs"]], on=["layer", "seq_id"], how="left")
    df["ratio"] = df["abs_value"] / df["median_abs"].clip(lower=np.finfo(np.float32).tiny)
    df = df[(df["abs_value"] > min_abs) & (df["ratio"] > min_ratio)].copy()
    if vision:
        df["role"] = [role_of_name(t) for t in df["token"]]
    else:
        delimiters = list(delimiters)
        df["role"] = [role(p, t, delimiters, bos) for p, t in zip(df["position"], df["token"])]
    return df.reset_index(drop=True)


def summarise(massive: pd.DataFrame, n_layers: int, saturated_layers: Sequence[int] = ()) -> pd.DataFrame:
    """One row per (dim, role) of massive activations (columns: SUMMARY_COLUMNS), by emergence;
    `saturated_layers`: the layers where some sequence has more massive entries than the top-k.

        >>> summarise(find_massive(stats.topk, stats.layer_stats), n_layers=30)[["dim", "emerge_layer"]]
    """
    saturated_layers = set(int(x) for x in saturated_layers)
    rows = []
    for (dim, rl), g in massive.groupby(["dim", "role"], sort=True):
        layers = sorted(g["layer"].unique())
        by_layer = g.groupby("layer").agg(n=("seq_id", "nunique"), mean_abs=("abs_value", "mean"))
        peak = int(by_layer.sort_values(["n", "mean_abs"], ascending=False).index[0])  # most sequences, then largest
        at_peak = (
            g[g["layer"] == peak].groupby("seq_id").agg(value=("value", "mean"), median_abs=("median_abs", "mean"))
        )
        tokens = g["token"].value_counts()
        rows.append(
            {
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
                "saturated": bool(saturated_layers & set(int(x) for x in layers)),
            }
        )
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


def saturated(layer_stats: pd.DataFrame, k: int) -> pd.DataFrame:
    """The (layer, sequence) pairs with more massive entries (the capture's exact n_massive) than
    the top-k holds: layer, seq_id, n_massive, k. Empty for a capture without counts.

        >>> saturated(stats.layer_stats, k=64)  # doctest: +SKIP
    """
    if "n_massive" not in layer_stats:
        return pd.DataFrame(columns=["layer", "seq_id", "n_massive", "k"])
    s = layer_stats.loc[layer_stats["n_massive"] > k, ["layer", "seq_id", "n_massive"]].reset_index(drop=True)
    return s.assign(k=k)


def saturation_note(n: int, k: int, sequences: int | None = None, of: int | None = None) -> str:
    """'saturated: 4,096 entries pass, the top-64 keeps 64' (+ in how many sequences).

    >>> saturation_note(4096, 64, 3, 4)
    'saturated: up to 4,096 entries pass both thresholds, the top-k keeps 64 (3 of 4 sequences)'
    """
    seqs = f" ({sequences} of {of} sequences)" if sequences is not None else ""
    return f"saturated: up to {n:,} entries pass both thresholds, the top-k keeps {k}{seqs}"


def dense(dim_max: pd.DataFrame | None, max_share: float = 0.5) -> pd.DataFrame:
    """The (layer, dim) pairs whose entries pass both massive thresholds at more than `max_share`
    of the positions (from the capture's per-dim counts): outlier features, not massive
    activations. Columns layer, dim, massive_token_share.

        >>> dense(stats.dim_max)  # doctest: +SKIP
    """
    if dim_max is None or "n_massive" not in dim_max:
        return pd.DataFrame(columns=["layer", "dim", "massive_token_share"])
    share = dim_max["n_massive"] / dim_max["n_positions"].clip(lower=1)
    return (
        dim_max.loc[share > max_share, ["layer", "dim"]]
        .assign(massive_token_share=share[share > max_share])
        .reset_index(drop=True)
    )


def _spans(layers: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out, layers = [], sorted(int(x) for x in layers)
    for x in layers:
        if out and x == out[-1][1] + 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def outlier_features(
    dim_max: pd.DataFrame | None,
    n_layers: int,
    token_share: float = 0.06,
    layer_share: float = 0.25,
    max_share: float = 0.5,
    massive_dims: Sequence[int] = (),
) -> pd.DataFrame:
    """One row per outlier feature dim (OUTLIER_COLUMNS): |a| above the capture's outlier magnitude
    (dim_max.n_outlier: > outlier_abs and > outlier_ratio x the median) at >= token_share of
    the positions in >= layer_share of the layers (Dettmers et al. 2022: criterion llm_int8), or
    massive at more than max_share of the tokens in some layer (dense_massive). token_share is
    the mean share of positions over its layers, max_token_share the largest; also_massive: the
    dim holds massive activations at a few tokens too (`massive_dims`).

        >>> outlier_features(stats.dim_max, n_layers=30)[["dim", "criterion", "layer_share", "token_share"]]
    """
    if dim_max is None or "n_outlier" not in dim_max:
        return pd.DataFrame(columns=OUTLIER_COLUMNS)
    t = dim_max.assign(
        share=dim_max["n_outlier"] / dim_max["n_positions"].clip(lower=1),
        mshare=dim_max["n_massive"] / dim_max["n_positions"].clip(lower=1),
    )
    rows = []
    massive_dims = set(int(d) for d in massive_dims)
    for dim, g in t.groupby("dim", sort=True):
        wide = g[g["share"] >= token_share]
        dense_layers = g.loc[g["mshare"] > max_share, "layer"].tolist()
        llm_int8 = len(wide) >= layer_share * n_layers and len(wide) > 0
        if not (llm_int8 or dense_layers):
            continue
        at = wide if len(wide) else g[g["layer"].isin(dense_layers)]
        rows.append(
            {
                "dim": int(dim),
                "criterion": " + ".join(
                    c for c, on in (("llm_int8", llm_int8), ("dense_massive", bool(dense_layers))) if on
                ),
                "n_layers": len(wide),
                "layer_share": len(wide) / n_layers,
                "first_layer": int(at["layer"].min()),
                "last_layer": int(at["layer"].max()),
                "token_share": float(at["share"].mean()),
                "max_token_share": float(g["share"].max()),
                "massive_token_share": float(g["mshare"].max()),
                "dense_layers": _spans(dense_layers),
                "max_abs": float(g["max_abs"].max()),
                "also_massive": int(dim) in massive_dims,
            }
        )
    return pd.DataFrame(rows, columns=OUTLIER_COLUMNS)


def per_layer(
    layer_stats: pd.DataFrame,
    massive: pd.DataFrame,
    vision: bool = False,
    k: int | None = None,
    dense_pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per layer: mean median |a|, mean top-1 |a|, their ratio, massive entries per
    sequence (the capture's exact count where it has one, else those among the top-k), where they
    are (`where`; tokens quoted for text, plain layout names for ViTs), the dims dense there
    (`dense_pairs`: outlier features, left out of massive_at) and "saturated" when more entries
    pass than the top-k (`k`) holds.

        >>> per_layer(stats.layer_stats, found.massive).loc[11, "massive_at"]
    """
    agg = layer_stats.groupby(["layer", "hook"], as_index=False).agg(
        median_abs=("median_abs", "mean"), top1_abs=("top1_abs", "mean")
    )
    agg["top1_over_median"] = agg["top1_abs"] / agg["median_abs"]
    n_seq = layer_stats["seq_id"].nunique()
    if "n_massive" in layer_stats:
        agg["massive_per_sequence"] = agg["layer"].map(layer_stats.groupby("layer")["n_massive"].mean()).astype(float)
    else:
        counts = massive.groupby("layer").size() if len(massive) else pd.Series(dtype=float)
        agg["massive_per_sequence"] = agg["layer"].map(counts).fillna(0) / n_seq
    at = {layer: where(g, quote=not vision) for layer, g in massive.groupby("layer")}
    agg["massive_at"] = [at.get(layer, "") for layer in agg["layer"]]
    d = dense_pairs if dense_pairs is not None else pd.DataFrame(columns=["layer", "dim", "massive_token_share"])
    dd = {
        layer: ", ".join(f"{int(r.dim)} ({r.massive_token_share:.0%} of tokens)" for r in g.itertuples())
        for layer, g in d.groupby("layer")
    }
    agg["outlier_dims"] = [dd.get(layer, "") for layer in agg["layer"]]
    sat = saturated(layer_stats, k) if k is not None else pd.DataFrame(columns=["layer", "seq_id", "n_massive", "k"])
    notes = {layer: saturation_note(int(g["n_massive"].max()), k, len(g), n_seq) for layer, g in sat.groupby("layer")}
    agg["saturated"] = [notes.get(layer, "") for layer in agg["layer"]]
    return agg


def verdict(
    summary: pd.DataFrame,
    min_abs: float = MIN_ABS,
    min_ratio: float = MIN_RATIO,
    outliers: pd.DataFrame | None = None,
    saturation: pd.DataFrame | None = None,
) -> dict:
    """found (bool), a one-line message, and (when found) the numbers a report quotes; the
    outlier feature dims, those shared with the massive activations, and the saturation.

        >>> verdict(summarise(massive.iloc[:0], 4))
        {'found': False, 'message': 'none found (no |a| > 100 and > 1000x the layer median)', ...}
    """
    out = _verdict(summary, min_abs, min_ratio)
    o = outliers if outliers is not None else pd.DataFrame(columns=OUTLIER_COLUMNS)
    out["outlier_dims"] = sorted(int(d) for d in o["dim"])
    out["shared_dims"] = sorted(set(out["outlier_dims"]) & set(out.get("dims", [])))
    notes = []
    dense_dims = o[o["dense_layers"] != ""] if len(o) else o
    if len(dense_dims):
        notes.append(
            "outlier feature(s), massive at most tokens (not counted as massive activations): "
            + ", ".join(
                f"dim {r.dim} ({r.massive_token_share:.0%} of tokens, blocks {r.dense_layers})"
                for r in dense_dims.itertuples()
            )
        )
    s = saturation if saturation is not None else pd.DataFrame(columns=["layer", "seq_id", "n_massive", "k"])
    out["saturated"] = None
    if len(s):
        out["saturated"] = {
            "n_pairs": int(len(s)),
            "max_count": int(s["n_massive"].max()),
            "k": int(s["k"].iloc[0]),
            "layers": sorted(int(x) for x in s["layer"].unique()),
        }
        notes.append(
            saturation_note(int(s["n_massive"].max()), int(s["k"].iloc[0]))
            + f" in {len(s)} (layer, sequence) pair(s), blocks {_spans(s['layer'].unique())}"
        )
    if notes:
        out["message"] = out["message"] + "; " + "; ".join(notes)
    return out


def _verdict(summary: pd.DataFrame, min_abs: float, min_ratio: float) -> dict:
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
        "message": (
            f"{len(summary)} massive activation(s) in dim(s) {dims} at {', '.join(roles)} token(s), "
            f"emerging after block {int(summary['emerge_layer'].min())}; largest {abs(top['mean_value']):.0f} "
            f"= {top['ratio_at_peak']:.0f}x the median |a| (block {int(top['peak_layer'])})"
        ),
    }


def _tables(stats) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, bool | None, dict | None]:
    if isinstance(stats, Mapping):
        return stats["topk"], stats["layer_stats"], stats.get("dim_max"), stats.get("vision"), stats.get("thresholds")
    return (
        stats.topk,
        stats.layer_stats,
        getattr(stats, "dim_max", None),
        getattr(stats, "vision", None),
        getattr(stats, "thresholds", None),
    )


def detect(
    stats,
    min_abs: float = MIN_ABS,
    min_ratio: float = MIN_RATIO,
    delimiters: Sequence[str] = DELIMITERS,
    vision: bool | None = None,
    bos: bool = False,
    massive_max_share: float = 0.5,
    outlier_abs: float | None = None,
    outlier_token_share: float = 0.06,
    outlier_layer_share: float = 0.25,
    outlier_ratio: float | None = None,
) -> Detection:
    """Detection on a capture: a massive.measure.capture.Capture, or any object or mapping with its
    `topk` and `layer_stats` tables (and `dim_max`, `thresholds`; e.g. read back from Parquet).
    `vision` (None: the capture's own flag) names the roles by the ViT layout; `bos`: every
    sequence begins with the BOS token (role "bos"). The capture's counts must have been made at
    min_abs and min_ratio (and outlier_abs, outlier_ratio; None: the capture's only one): a pair of
    its ladders (massive.measure.capture.COUNTS, Capture.at); else MassiveError.

        >>> found = detect(stats, min_abs=100, min_ratio=1000)
        >>> found.found, found.dims, found.emerge_layer
        (True, [247, 507], 11)
        >>> detect({"topk": topk, "layer_stats": layer_stats}).summary.empty
        True
    """
    from massive.measure.capture import Capture, is_ladder

    if isinstance(stats, Mapping) and is_ladder(stats.get("thresholds")):
        stats = Capture(
            **{key: stats.get(key) for key in ("layer_stats", "topk", "dim_max", "thresholds")},
            vision=bool(stats.get("vision")),
        )
    if hasattr(stats, "at"):  # a Capture: its counts at these thresholds (one of its ladders' pairs, else an error)
        stats = stats.at(min_abs, min_ratio, outlier_abs, outlier_ratio)
    topk, layer_stats, dim_max, own_vision, counted = _tables(stats)
    vision = bool(own_vision) if vision is None else vision
    wanted = {"min_abs": float(min_abs), "min_ratio": float(min_ratio)}
    for key, value in (("outlier_abs", outlier_abs), ("outlier_ratio", outlier_ratio)):
        if value is not None:
            wanted[key] = float(value)
    for key, value in wanted.items():
        if counted and key in counted and float(counted[key]) != value:
            raise MassiveError(
                f"detect.{key}={value:g}, but the capture counted with {key}={float(counted[key]):g}: "
                "capture again with the same thresholds"
            )
    n_layers = int(layer_stats["layer"].max()) + 1
    k = int(topk["rank"].max()) + 1
    massive = find_massive(topk, layer_stats, min_abs, min_ratio, delimiters, vision=vision, bos=bos)
    dense_pairs = dense(dim_max, massive_max_share)
    if len(dense_pairs):  # massive at most tokens: outlier features, not massive activations
        key = pd.MultiIndex.from_frame(dense_pairs[["layer", "dim"]].astype("int64"))
        massive = massive[~pd.MultiIndex.from_frame(massive[["layer", "dim"]].astype("int64")).isin(key)].reset_index(
            drop=True
        )
    sat = saturated(layer_stats, k)
    if "n_massive" in layer_stats:
        capped = bool(len(sat))
    else:  # a capture without counts: k massive entries among the top-k may hide more
        full = massive.groupby(["layer", "seq_id"]).size()
        capped = bool(len(full) and full.max() >= k)
    if capped:
        log.warning(
            "saturated: some (layer, sequence) has more massive entries than the capture's top-k (%d) holds: "
            "raise capture.top_k to see them all",
            k,
        )
    summary = summarise(massive, n_layers, sat["layer"].unique() if len(sat) else ())
    outliers = outlier_features(
        dim_max, n_layers, outlier_token_share, outlier_layer_share, massive_max_share, summary["dim"].unique()
    )
    return Detection(
        massive=massive,
        summary=summary,
        per_layer=per_layer(layer_stats, massive, vision=vision, k=k, dense_pairs=dense_pairs),
        result=verdict(summary, min_abs, min_ratio, outliers, sat),
        n_layers=n_layers,
        k=k,
        capped=capped,
        thresholds={"min_abs": min_abs, "min_ratio": min_ratio},
        outliers=outliers,
        saturation=sat,
    )
