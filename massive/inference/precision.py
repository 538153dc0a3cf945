"""Precision headroom: how close the residual stream comes to the limits of float16 and bfloat16.

Massive activations are the largest numbers a model computes. float16 keeps 10 bits of mantissa
and 5 of exponent (largest finite value 65,504); bfloat16 keeps float32's 8-bit exponent (3.4e38)
but only 7 stored bits of mantissa, so its values are far apart at that size: at 24,000 two
adjacent bfloat16 values are 128 apart (float16: 16). The facts of each format come from
torch.finfo, the rounding from torch itself (a value rounds to inf where the format overflows),
and the spacing from torch.nextafter: nothing is tabulated by hand.

  headroom   per block and format: the largest |a| of the residual stream (after the block, the
             capture's hook) in a reference run, the format's limit, limit / max |a|, the spacing
             of the format at that magnitude, whether it overflows and which dims would; beside it,
             what a run of the model *in* that format measured at the same block (its largest
             finite |a|, how many inf and NaN), and which block was the first with inf or NaN.
  measure    one run over token chunks with a BlockRange at every block's output: the per-block
             table and the perplexity (None, with the reason, where the loss is not finite: in
             this measure an overflow is a result, not an error).

    >>> from massive.inference import precision
    >>> precision.spacing(24_000, "bfloat16"), precision.spacing(24_000, "float16")
    (128.0, 16.0)
    >>> ref = precision.measure(model, chunks)                   # the model as loaded (float32)
    >>> fp16 = precision.measure(precision.cast(model, "float16"), chunks)
    >>> table = precision.headroom(ref.blocks, {"float16": fp16.blocks})
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from massive.core import hooks
from massive.core.arch import DTYPES
from massive.core.errors import MassiveError, NonFiniteError, check_finite
from massive.intervene.comparison import HARMFUL, HARMLESS, RESAMPLES, summarise
from massive.measure.perplexity import chunk_nll

FORMATS = ("float16", "bfloat16")
HEADROOM_COLUMNS = [
    "layer",
    "hook",
    "format",
    "max_abs",
    "dim",
    "limit",
    "headroom",
    "spacing",
    "relative_spacing",
    "overflow",
    "overflow_dims",
    "measured_max_abs",
    "measured_inf",
    "measured_nan",
    "first_nonfinite",
]


def dtype(fmt: str) -> torch.dtype:
    """The torch dtype of a format name (float16, bfloat16, float32); an unknown one is a MassiveError."""
    if fmt not in DTYPES:
        raise MassiveError(f"unknown number format {fmt!r} (known: {', '.join(DTYPES)})")
    return DTYPES[fmt]


def limit(fmt: str) -> float:
    """The largest finite value of a format: limit("float16") == 65504.0."""
    return float(torch.finfo(dtype(fmt)).max)


def rounded(x: float, fmt: str) -> float:
    """|x| rounded to the nearest value of the format (inf where it overflows: float16 from 65,520 on)."""
    return float(torch.tensor(abs(float(x)), dtype=torch.float64).to(dtype(fmt)))


def overflows(x: float, fmt: str) -> bool:
    """Whether |x| rounds to inf in the format.

    >>> overflows(65_519, "float16"), overflows(65_520, "float16")
    (False, True)
    """
    return math.isinf(rounded(x, fmt))


def spacing(x: float, fmt: str) -> float:
    """The gap between |x| rounded to the format and the next larger value of the format (inf
    where |x| overflows): the resolution the format has at that magnitude.

        >>> spacing(24_000, "bfloat16")
        128.0
    """
    r = torch.tensor(abs(float(x)), dtype=torch.float64).to(dtype(fmt))
    if torch.isinf(r):
        return math.inf
    up = torch.nextafter(r, torch.tensor(math.inf, dtype=r.dtype))
    return float(up.double() - r.double())


class BlockRange:
    """A hook function for every block's output (blocks.L.hook_resid_post) that keeps, per block,
    the largest finite |a| of each dim (in float32) and how many inf and NaN the output held, and
    lets the forward pass go on: a run that overflows is measured to its end.

        >>> rng = BlockRange()
        >>> with hooks.hooked(model, rng.hooks(model)):
        ...     model(ids)
        >>> rng.table()[["layer", "max_abs", "dim", "n_inf", "n_nan"]]
    """

    def __init__(self):
        self.dim_max: dict[int, torch.Tensor] = {}
        self.n_inf: dict[int, int] = defaultdict(int)
        self.n_nan: dict[int, int] = defaultdict(int)

    def hooks(self, model: nn.Module) -> dict:
        return {name: self for name in hooks.names(model, "blocks.*.hook_resid_post")}

    def __call__(self, h: torch.Tensor, name: str) -> None:
        layer = hooks.layer_of(name)
        a = h.detach().to(torch.float32).abs()
        self.n_inf[layer] += int(torch.isinf(a).sum())
        self.n_nan[layer] += int(torch.isnan(a).sum())
        dm = a.masked_fill(~torch.isfinite(a), 0.0).reshape(-1, a.shape[-1]).amax(0).cpu()
        self.dim_max[layer] = dm if layer not in self.dim_max else torch.maximum(self.dim_max[layer], dm)

    def table(self) -> pd.DataFrame:
        """One row per block: layer, hook, max_abs (largest finite |a|), dim (where), n_inf, n_nan."""
        rows = []
        for layer, dm in sorted(self.dim_max.items()):
            rows.append(
                {
                    "layer": layer,
                    "hook": hooks.resid_post(layer),
                    "max_abs": float(dm.max()),
                    "dim": int(dm.argmax()),
                    "n_inf": self.n_inf[layer],
                    "n_nan": self.n_nan[layer],
                }
            )
        return pd.DataFrame(rows, columns=["layer", "hook", "max_abs", "dim", "n_inf", "n_nan"])


@dataclass
class Run:
    """What one run measured: blocks (BlockRange.table), dim_max (layer -> max finite |a| per dim),
    perplexity (None when the loss was not finite), n_tokens, note (why it is None), first_nonfinite
    (the first block whose output held inf or NaN, None if none), dtype, nll (the per-chunk mean
    NLL the perplexity is exp of the mean of, None with it: what massive.compare pairs)."""

    blocks: pd.DataFrame
    dim_max: dict[int, torch.Tensor]
    perplexity: float | None
    n_tokens: int
    note: str
    first_nonfinite: int | None
    dtype: str
    nll: np.ndarray | None = None


def _dtype_name(model: nn.Module) -> str:
    dt = next(p.dtype for p in model.parameters() if p.is_floating_point())
    return str(dt).replace("torch.", "")


def cast(model: nn.Module, fmt: str) -> nn.Module:
    """A copy of `model` in format `fmt` (the original is left as it is).

    >>> half = cast(model, "float16")
    """
    return copy.deepcopy(model).to(dtype(fmt))


def measure(model: nn.Module, chunks: torch.Tensor, batch_size: int = 4, device=None, where: str = "precision") -> Run:
    """One perplexity run of `chunks` [n, seq_len] with a BlockRange at every block's output. A
    non-finite loss is recorded (perplexity None, note: the error's line), not raised.

        >>> run = measure(cast(model, "float16"), chunks)
        >>> run.first_nonfinite, run.perplexity
        (None, 26.3)
    """
    rng = BlockRange()
    name = _dtype_name(model)
    note, value, nll, n_tokens = "", None, None, int(chunks[:, 1:].numel())
    with hooks.hooked(model, rng.hooks(model)):
        try:
            nll = chunk_nll(model, chunks, batch_size, device, where=f"{where}: the model in {name}")
            value = check_finite(math.exp(float(nll.mean())), f"{where}: the perplexity of the model in {name}")
        except (NonFiniteError, OverflowError) as exc:
            nll, note = None, str(exc).splitlines()[0]
    blocks = rng.table()
    bad = blocks.loc[(blocks["n_inf"] + blocks["n_nan"]) > 0, "layer"]
    return Run(
        blocks=blocks,
        dim_max=dict(rng.dim_max),
        perplexity=value,
        n_tokens=n_tokens,
        note=note,
        first_nonfinite=int(bad.iloc[0]) if len(bad) else None,
        dtype=name,
        nll=nll,
    )


def compared(
    reference: Run,
    runs: dict[str, Run],
    resamples: int = RESAMPLES,
    seed: int = 1,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
    where: str = "precision",
) -> pd.DataFrame:
    """The run in each format against the reference run, on the same chunks (massive.intervene.comparison's
    table of their per-chunk NLLs, `format` first): perplexity (None where it was not finite, with
    the note), ratio, its paired-bootstrap interval, verdict.

        >>> compared(ref, {"float16": fp16})[["format", "perplexity", "ratio", "verdict"]]
    """
    t = summarise(
        {"reference": reference.nll, **{fmt: r.nll for fmt, r in runs.items()}},
        "reference",
        resamples,
        seed,
        harmful_factor,
        harmless_factor,
        reference.n_tokens,
        {fmt: r.note for fmt, r in runs.items()},
        where=where,
    )
    return t[t["condition"] != "reference"].rename(columns={"condition": "format"}).reset_index(drop=True)


def headroom(reference: Run, runs: dict[str, Run], formats=FORMATS) -> pd.DataFrame:
    """One row per (block, format) (HEADROOM_COLUMNS): the reference run's largest |a| and its dim,
    the format's limit, headroom = limit / max |a|, spacing (and relative spacing: spacing / max
    |a|) of the format at that magnitude, overflow (max |a| rounds to inf), overflow_dims (the dims
    whose largest |a| would), and from the run in that format (runs[fmt], where given) the
    largest finite |a| it measured at the block, its inf and NaN counts, and whether the block is
    the first with a non-finite value.

        >>> t = headroom(ref, {"float16": fp16})
        >>> t[t.overflow][["layer", "format", "max_abs", "overflow_dims"]]
    """
    rows = []
    for fmt in formats:
        run = runs.get(fmt)
        measured = run.blocks.set_index("layer") if run is not None else None
        top = limit(fmt)
        for _, r in reference.blocks.iterrows():
            layer, m = int(r["layer"]), float(r["max_abs"])
            dm = reference.dim_max[layer]
            over = [int(d) for d in torch.nonzero(dm > top).flatten().tolist() if overflows(float(dm[d]), fmt)]
            row = {
                "layer": layer,
                "hook": r["hook"],
                "format": fmt,
                "max_abs": m,
                "dim": int(r["dim"]),
                "limit": top,
                "headroom": top / m if m > 0 else math.inf,
                "spacing": spacing(m, fmt),
                "relative_spacing": spacing(m, fmt) / m if m > 0 else math.nan,
                "overflow": overflows(m, fmt),
                "overflow_dims": ", ".join(map(str, over)),
                "measured_max_abs": None,
                "measured_inf": None,
                "measured_nan": None,
                "first_nonfinite": None,
            }
            if measured is not None and layer in measured.index:
                g = measured.loc[layer]
                row.update(
                    measured_max_abs=float(g["max_abs"]),
                    measured_inf=int(g["n_inf"]),
                    measured_nan=int(g["n_nan"]),
                    first_nonfinite=run.first_nonfinite == layer,
                )
            rows.append(row)
    out = pd.DataFrame(rows, columns=HEADROOM_COLUMNS)
    for col in ("measured_inf", "measured_nan"):
        out[col] = out[col].astype("Int64")
    out["first_nonfinite"] = out["first_nonfinite"].astype("boolean")
    return out


def summary(table: pd.DataFrame, runs: dict[str, Run]) -> dict:
    """Per format: the smallest headroom and its block, the first block that would overflow
    (computed), the first block with inf or NaN in the run in that format (measured), its
    perplexity (None: not finite) and note.

        >>> summary(headroom(ref, {"float16": fp16}), {"float16": fp16})["float16"]["min_headroom"]
        2.77
    """
    out = {}
    for fmt, g in table.groupby("format", sort=False):
        low = g.loc[g["headroom"].idxmin()]
        over = g.loc[g["overflow"], "layer"]
        run = runs.get(fmt)
        out[fmt] = {
            "limit": float(g["limit"].iloc[0]),
            "min_headroom": float(low["headroom"]),
            "min_headroom_layer": int(low["layer"]),
            "max_abs": float(low["max_abs"]),
            "dim": int(low["dim"]),
            "spacing_at_max": float(low["spacing"]),
            "first_overflow_layer": int(over.iloc[0]) if len(over) else None,
            "measured_first_nonfinite": run.first_nonfinite if run else None,
            "perplexity": run.perplexity if run else None,
            "note": run.note if run else "",
        }
    return out
