"""Regrowth: what becomes of the targeted massive activations downstream of an intervention.

An intervention at the block where massive activations emerge can look harmless because later
blocks write them again (Owen et al. 2025: GPT-2's dim 447 keeps growing after layer 2). While an
intervention runs (massive.intervene.interventions.applied), its Context holds, per forward pass, the
massive entries of the first block it acts at, found before the edit (`ctx.targeted`: (batch,
position, dim)). `recording` follows those same entries at that block (after the edit) and at
every later block, with each block's top-1 and median |a|:

    >>> with massive.intervene(model, found, "zero", tokenizer=tok) as ctx, recording(model, ctx, first=11) as rec:
    ...     ppl = massive.perplexity(model, chunks)
    >>> rec.table().loc[:, ["block", "target_abs", "top1_abs", "median_abs"]].head(2)

`table` joins the recorders of several interventions and adds `share`: the targeted entries'
mean |a| over the baseline's ("none") at the same block; `comes_back` reads when they do.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError, check_finite

COLUMNS = ["intervention", "block", "n_targets", "target_abs", "top1_abs", "median_abs", "share"]


@dataclass
class Recorder:
    """Sums over forward passes, per block >= first: |a| of the targeted entries and their count,
    each sequence's top-1 and median |a| and the number of sequences (float64, on the CPU)."""

    first: int
    target_sum: dict[int, float] = field(default_factory=dict)
    target_n: dict[int, int] = field(default_factory=dict)
    top1_sum: dict[int, float] = field(default_factory=dict)
    median_sum: dict[int, float] = field(default_factory=dict)
    n_seq: dict[int, int] = field(default_factory=dict)

    def add(self, block: int, h: torch.Tensor, targeted: torch.Tensor) -> None:
        a = h.detach().to(torch.float32).abs()
        flat = a.flatten(1)
        self.target_sum[block] = self.target_sum.get(block, 0.0) + float(a[targeted].double().sum())
        self.target_n[block] = self.target_n.get(block, 0) + int(targeted.sum())
        self.top1_sum[block] = self.top1_sum.get(block, 0.0) + float(flat.max(dim=1).values.double().sum())
        self.median_sum[block] = self.median_sum.get(block, 0.0) + float(flat.median(dim=1).values.double().sum())
        self.n_seq[block] = self.n_seq.get(block, 0) + a.shape[0]

    def table(self) -> pd.DataFrame:
        """One row per block: n_targets, target_abs (mean |a| of the targeted entries), top1_abs and
        median_abs (means over sequences); no row when nothing was targeted."""
        rows = [
            {
                "block": b,
                "n_targets": self.target_n[b],
                "target_abs": self.target_sum[b] / self.target_n[b],
                "top1_abs": self.top1_sum[b] / self.n_seq[b],
                "median_abs": self.median_sum[b] / self.n_seq[b],
            }
            for b in sorted(self.n_seq)
            if self.target_n[b] > 0
        ]
        return pd.DataFrame(rows, columns=COLUMNS[1:-1])


@contextmanager
def recording(model: nn.Module, ctx, first: int | None) -> Iterator[Recorder]:
    """Follow `ctx.targeted` (set by the intervention whose Context is `ctx`) at the output of
    block `first` and of every later block; enter it after the intervention, so that its hooks
    see the edited tensors. first=None (nothing targeted): records nothing.

        >>> with massive.intervene(model, found, "none", tokenizer=tok) as ctx, recording(model, ctx, 11) as rec:
        ...     model(ids)
    """
    rec = Recorder(first=-1 if first is None else int(first))

    def keep(h: torch.Tensor, name: str) -> None:
        if ctx.targeted is not None and ctx.targeted.shape == h.shape:
            rec.add(hooks.layer_of(name), h, ctx.targeted)

    blocks = [] if first is None else range(int(first), arch.num_layers(model.config))
    with hooks.hooked(model, [(hooks.resid_post(b), keep) for b in blocks]):
        yield rec


def table(recorders: dict[str, Recorder], baseline: str = "none") -> pd.DataFrame:
    """The recorders of several interventions (name -> Recorder) as one table (COLUMNS), with
    share = target_abs / the baseline's target_abs at that block (1 for the baseline itself).

        >>> table({"none": rec_none, "zero": rec_zero}).query("intervention == 'zero'")["share"].round(2).tolist()
        [0.0, 0.41, 0.77]
    """
    parts = [r.table().assign(intervention=name) for name, r in recorders.items()]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    if baseline not in recorders:
        raise MassiveError(f"regrowth: no {baseline!r} run to measure the share against")
    base = out[out["intervention"] == baseline].set_index("block")["target_abs"]
    out["share"] = out["target_abs"] / out["block"].map(base)
    for row in out.itertuples():
        check_finite(float(row.share), f"regrowth: the share of {row.intervention!r} at block {row.block}")
    return out[COLUMNS]


@dataclass
class Regrowth:
    """Whether the entries one intervention edited come back downstream: the first later block
    where their mean |a| reaches `threshold` x the baseline's (None: never), and the largest share."""

    intervention: str
    first: int
    back_at: int | None
    max_share: float
    max_block: int | None
    threshold: float


def comes_back(regrowth: pd.DataFrame, intervention: str = "zero", threshold: float = 0.5) -> Regrowth | None:
    """Read a regrowth table (`table`): after the first block recorded, the first block where
    `intervention`'s targeted entries reach `threshold` of their size without it; None when the
    table has no row of it.

        >>> comes_back(table({"none": rec_none, "zero": rec_zero}), "zero", 0.5).back_at
        13
    """
    g = regrowth[regrowth["intervention"] == intervention].sort_values("block")
    if g.empty:
        return None
    first, later = int(g["block"].iloc[0]), g[g["block"] > g["block"].iloc[0]]
    back = later[later["share"] >= threshold]
    top = later.loc[later["share"].idxmax()] if len(later) else None
    return Regrowth(
        intervention,
        first,
        int(back["block"].iloc[0]) if len(back) else None,
        float(top["share"]) if top is not None else 0.0,
        int(top["block"]) if top is not None else None,
        threshold,
    )
