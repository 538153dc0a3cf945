"""The attention measures of the recorded calibration pass: per head (mass on the first token, on the
massive tokens, Sink_1), per layer, the concentration layer, and the decomposition of each head's output."""

from __future__ import annotations

import pandas as pd
import torch

from massive.core.errors import MassiveError, NonFiniteError, check_finite
from massive.measure.attention.recorder import PARTS, Recorder


def head_table(rec: Recorder, sink_threshold: float) -> pd.DataFrame:
    """Per (layer, head): mean attention that queries at positions >= 1 put on the first token
    (mass_first), on the massive tokens (mass_massive), on a learned sink (mass_sink: gpt-oss's
    `sinks` logit, the share its dropped softmax column took; 0 where the model has none), on the
    rest (mass_other; the four sum to 1 with mass_first inside mass_massive when the first token is
    massive); sink: a Sink_1 head (mass_first > sink_threshold, Gu et al. 2024). Layers without
    attention probabilities (a hybrid's linear attention, Recorder.skipped) have no rows.

        >>> head_table(rec, sink_threshold=0.3).columns.tolist()
        ['layer', 'head', 'mass_first', 'mass_massive', 'mass_sink', 'mass_other', 'sink']
    """
    rows = []
    for layer in sorted(rec.mass):
        m = torch.cat(rec.mass[layer]).mean(0)  # [heads, 3], mean over sequences
        for h in range(m.shape[0]):
            first, massive, sink = float(m[h, 0]), float(m[h, 1]), float(m[h, 2])
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "mass_first": first,
                    "mass_massive": massive,
                    "mass_sink": sink,
                    "mass_other": 1.0 - massive - sink,
                    "sink": first > sink_threshold,
                }
            )
    if not rows:
        raise MassiveError(
            "attention: no layer computed attention probabilities (" + "; ".join(rec.skipped().values()) + ")"
        )
    return pd.DataFrame(rows)


def layer_table(heads: pd.DataFrame, emerge: int | None, layer_stats: pd.DataFrame | None) -> pd.DataFrame:
    """Per layer: head means of head_table, the Sink_1 share of heads, whether the layer's input
    holds massive activations (layer > emerge), and top-1 |a| / median |a| of capture's layer_stats.

        >>> layer_table(head_table(rec, 0.3), emerge=1, layer_stats=None)["massive_in_input"].tolist()
        [False, False, True, True]
    """
    out = heads.groupby("layer", as_index=False).agg(
        mass_first=("mass_first", "mean"),
        mass_massive=("mass_massive", "mean"),
        mass_sink=("mass_sink", "mean"),
        mass_other=("mass_other", "mean"),
        sink_1_share=("sink", "mean"),
        n_sink_heads=("sink", "sum"),
        max_head_mass_first=("mass_first", "max"),
    )
    out["massive_in_input"] = out["layer"] > emerge if emerge is not None else False  # block L reads block L-1's output
    if layer_stats is not None:
        agg = layer_stats.groupby("layer")[["top1_abs", "median_abs"]].mean()
        out["top1_over_median"] = out["layer"].map(agg["top1_abs"] / agg["median_abs"])
        for layer, v in zip(out["layer"], out["top1_over_median"]):
            if not pd.isna(v):  # NaN: a layer the capture did not cover
                check_finite(float(v), f"attention: top-1 |a| / median |a| of block {layer}")
    return out


def concentration_layer(layers: pd.DataFrame, threshold: float) -> int | None:
    """The first layer whose head-mean attention on the massive tokens is above `threshold` (None: none).

    >>> concentration_layer(layer_table(heads, emerge, None), threshold=0.5)
    2
    """
    above = layers.loc[layers["mass_massive"] > threshold, "layer"]
    return int(above.iloc[0]) if len(above) else None


def decomposition(rec: Recorder) -> pd.DataFrame:
    """Per (layer, head, part in massive|other|random): how constant the part is across sequences
    at the same query position: rel_std (RMS deviation from the mean / RMS norm of the mean),
    cos_to_mean, norm (mean |part|), n_sequences.

        >>> decomposition(rec).groupby("part")["rel_std"].median()   # massive << random for a sink
    """
    rows = []
    for (name, layer), chunks in sorted(rec.samples.items(), key=lambda kv: (kv[0][1], PARTS.index(kv[0][0]))):
        x = torch.cat(chunks).double()  # [sequences, heads, queries, d]
        mean = x.mean(0, keepdim=True)
        dev = (x - mean).pow(2).sum(-1).mean(dim=(0, 2)).sqrt()  # RMS over sequences and queries: [heads]
        scale = mean.pow(2).sum(-1).mean(dim=(0, 2)).sqrt()
        cos = torch.nn.functional.cosine_similarity(x, mean.expand_as(x), dim=-1).mean(dim=(0, 2))
        norm = x.norm(dim=-1).mean(dim=(0, 2))
        for h in range(x.shape[1]):
            if not scale[h] > 0 and rec.hidden.get((name, layer)):
                rec.notes[layer] = (
                    f"layer {layer}: the mask (a sliding window) hides the {name} tokens from every sampled "
                    "query (second half of the sequence): no decomposition rows there"
                )
                continue
            if not scale[h] > 0:
                raise NonFiniteError(
                    f"attention: the {name} tokens' part of layer {layer} head {h} is zero in every "
                    f"calibration sequence, so its rel_std is undefined (no {name} token among them?)"
                )
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "part": name,
                    "norm": float(norm[h]),
                    "rel_std": float(dev[h] / scale[h]),
                    "cos_to_mean": float(cos[h]),
                    "n_sequences": x.shape[0],
                }
            )
    return pd.DataFrame(rows)
