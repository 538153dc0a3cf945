"""One way to compare conditions: per-chunk NLL under each, the perplexity ratio to a baseline
with a paired bootstrap interval, and the verdict that interval supports.

Every causal test of the pipeline is "condition -> perplexity -> ratio": an activation
intervention (ablate), a weight edit (origins), a quantization scheme or a window mask
(inference), an attention replacement (attention). A *condition* is a factory of a context
manager: while it is entered the model runs under it. What it yields is kept (the
intervention's context, with its counts); when it yields an nn.Module, that module runs instead
of the model (a wrapped or cast copy: massive.inference.window.Windowed, massive.inference.precision.cast).

Each condition gives the mean NLL of every chunk (massive.measure.perplexity.chunk_nll: the one NLL loop,
float32 logits, float64 means; a non-finite loss is a NonFiniteError naming the condition). The chunks
are the unit of resampling: a seeded paired bootstrap (scipy.stats.bootstrap, percentile method)
draws chunk indices with replacement, the same for the condition and the baseline, and gives
the 95% interval of the ratio exp(mean NLL - mean NLL of the baseline) (and of each perplexity
alone). The verdict reads the interval, not the point:

  harmful       the interval's lower bound exceeds harmful_factor (HARMFUL)
  harmless      its upper bound is below harmless_factor (HARMLESS)
  inconclusive  otherwise (too few chunks, or an effect between the two factors)

    >>> import massive
    >>> cmp = massive.compare(model, chunks, {"none": None,
    ...                                       "zero": lambda: massive.intervene(model, found, "zero")},
    ...                       baseline="none", resamples=1000, seed=1)
    >>> cmp.table[["condition", "perplexity", "ratio", "ratio_lo", "ratio_hi", "verdict"]]
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from massive.core.errors import MassiveError, NonFiniteError, check_finite

if TYPE_CHECKING:  # the annotations only: compare imports torch when it runs
    import torch
    from torch import nn

CONFIDENCE = 0.95
VERDICTS = ("harmful", "harmless", "inconclusive")
HARMFUL = 2.0  # "harmful" when the 95% interval of the perplexity ratio lies above this
HARMLESS = 1.1  # "harmless" when it lies below this; "inconclusive" otherwise
RESAMPLES = 1000  # paired bootstrap resamples over the chunks
# The columns every comparison table has, in this order (callers put their own before them).
COLUMNS = [
    "perplexity",
    "ppl_lo",
    "ppl_hi",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "verdict",
    "n_tokens",
    "n_chunks",
    "bootstrap",
]

Condition = Callable[[], ContextManager[Any]] | None


# ---------------------------------------------------------------- the bootstrap and the verdict
@dataclass
class Interval:
    """A condition's perplexity and ratio to the baseline, each with its 95% bootstrap interval."""

    perplexity: float
    ppl_lo: float
    ppl_hi: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    n_chunks: int
    resamples: int


def _percentile(data: tuple[np.ndarray, ...], statistic, resamples: int, seed: int) -> tuple[float, float]:
    from scipy import stats  # here, not at the top: scipy.stats adds ~0.5 s to every rule's start

    res = stats.bootstrap(
        data,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        method="percentile",
        confidence_level=CONFIDENCE,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _check_pairable(n: int, resamples: int, where: str) -> None:
    if resamples < 1:
        raise MassiveError(f"{where}: the bootstrap needs at least 1 resample (got {resamples})")
    if n < 2:
        raise MassiveError(
            f"{where}: a bootstrap interval needs at least 2 perplexity chunks (got {n}): "
            f"raise max_chunks or use a longer corpus"
        )


def ratio_interval(nll: np.ndarray, base: np.ndarray, resamples: int, seed: int, where: str = "comparison") -> Interval:
    """The perplexity of per-chunk mean NLLs `nll` and its ratio to those of the baseline `base`
    on the same chunks, with seeded paired-bootstrap 95% intervals (`resamples` draws). Fewer
    than 2 chunks, unequal lengths, resamples < 1 or a non-finite result is an error naming `where`.

        >>> ci = ratio_interval(np.array([3.1, 3.6, 3.3]), np.array([3.0, 3.5, 3.3]), resamples=1000, seed=1)
        >>> round(ci.ratio, 4), ci.ratio_lo <= ci.ratio <= ci.ratio_hi
        (1.0689, True)
    """
    nll, base = np.asarray(nll, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if nll.shape != base.shape or nll.ndim != 1:
        raise MassiveError(f"{where}: per-chunk NLLs of shapes {nll.shape} and {base.shape} cannot be paired")
    _check_pairable(len(nll), resamples, where)
    for v in (*nll, *base):
        check_finite(float(v), f"{where}: a per-chunk NLL")
    ppl = lambda a, axis=-1: np.exp(a.mean(axis=axis))  # noqa: E731
    ratio = lambda a, b, axis=-1: np.exp(a.mean(axis=axis) - b.mean(axis=axis))  # noqa: E731
    out = Interval(
        float(ppl(nll)),
        *_percentile((nll,), ppl, resamples, seed),
        float(ratio(nll, base)),
        *_percentile((nll, base), ratio, resamples, seed),
        n_chunks=len(nll),
        resamples=resamples,
    )
    for key in ("perplexity", "ppl_lo", "ppl_hi", "ratio", "ratio_lo", "ratio_hi"):
        check_finite(getattr(out, key), f"{where}: the {key}")
    return out


def verdict(lo: float, hi: float, harmful_factor: float = HARMFUL, harmless_factor: float = HARMLESS) -> str:
    """harmful (lo > harmful_factor), harmless (hi < harmless_factor) or inconclusive.

    >>> verdict(1.2, 1.5, 2.0, 1.1), verdict(0.98, 1.03, 2.0, 1.1), verdict(2.5, 9.0, 2.0, 1.1)
    ('inconclusive', 'harmless', 'harmful')
    """
    if harmless_factor > harmful_factor:
        raise MassiveError(f"the harmless factor {harmless_factor} exceeds the harmful factor {harmful_factor}")
    if lo > harmful_factor:
        return "harmful"
    if hi < harmless_factor:
        return "harmless"
    return "inconclusive"


# ---------------------------------------------------------------- conditions against a baseline
def named(where: str, name: str) -> str:
    """Where a condition's error happened: `where` with the condition's name at its "{}" (else after it).

    >>> named("ablate: intervention {} at blocks 1", "zero"), named("attention: variant", "none")
    ("ablate: intervention 'zero' at blocks 1", "attention: variant 'none'")
    """
    return where.replace("{}", repr(name)) if "{}" in where else f"{where} {name!r}"


@dataclass
class Comparison:
    """What `compare` measured: `table`, one row per condition in the order given (condition,
    then COLUMNS, then note: why a tolerated condition has no number); `nll`, each condition's
    per-chunk NLL (None where it was not finite); `contexts`, what each condition's context
    manager yielded (its counts: massive.intervene.interventions.Context, ...)."""

    baseline: str
    table: pd.DataFrame
    nll: dict[str, np.ndarray | None]
    contexts: dict[str, Any] = field(default_factory=dict)

    def row(self, condition: str) -> dict:
        """The table's row of `condition` as a dict (COLUMNS and note)."""
        return self.table.set_index("condition").loc[condition].to_dict()


def summarise(
    nll: Mapping[str, np.ndarray | None],
    baseline: str,
    resamples: int = RESAMPLES,
    seed: int = 1,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
    n_tokens: int | None = None,
    notes: Mapping[str, str] | None = None,
    where: str = "compare",
) -> pd.DataFrame:
    """The comparison table (condition, COLUMNS, note) of per-chunk NLLs already measured (`nll`:
    condition -> float64 [n_chunks], None for a condition whose loss was not finite: its row has
    no number and its `notes` entry says why). `n_tokens`: the predicted tokens of the chunks."""
    if baseline not in nll or nll[baseline] is None:
        raise MassiveError(
            f"{where}: the baseline {baseline!r} is not among the measured conditions ({', '.join(nll)})"
        )
    notes = notes or {}
    base = nll[baseline]
    rows = []
    for name, values in nll.items():
        row = {
            "condition": name,
            **dict.fromkeys(COLUMNS),
            "n_tokens": n_tokens,
            "n_chunks": len(base),
            "bootstrap": resamples,
            "note": notes.get(name, ""),
        }
        if values is not None:
            ci = ratio_interval(values, base, resamples, seed, where=f"{named(where, name)} against {baseline!r}")
            row.update(
                perplexity=ci.perplexity,
                ppl_lo=ci.ppl_lo,
                ppl_hi=ci.ppl_hi,
                ratio=ci.ratio,
                ratio_lo=ci.ratio_lo,
                ratio_hi=ci.ratio_hi,
                verdict=verdict(ci.ratio_lo, ci.ratio_hi, harmful_factor, harmless_factor),
            )
        rows.append(row)
    out = pd.DataFrame(rows, columns=["condition", *COLUMNS, "note"])
    for col in ("perplexity", "ppl_lo", "ppl_hi", "ratio", "ratio_lo", "ratio_hi"):
        out[col] = out[col].astype("float64")
    out["n_tokens"] = out["n_tokens"].astype("Int64")
    return out


def compare(
    model: nn.Module,
    chunks: torch.Tensor,
    conditions: Mapping[str, Condition],
    baseline: str = "none",
    resamples: int = RESAMPLES,
    seed: int = 1,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    known: Mapping[str, np.ndarray] | None = None,
    tolerate: Callable[[str], bool] | None = None,
    where: str = "compare",
    progress: bool = False,
) -> Comparison:
    """Per-chunk NLL of `chunks` [n, seq_len] under each of `conditions` (name -> a context
    manager factory, None: the model as it is), the baseline first (whatever the order), then the
    others in order; the ratio of each to `baseline` with its paired-bootstrap 95% interval
    (`resamples`, `seed`) and verdict (`harmful_factor`, `harmless_factor`). `known`: per-chunk NLLs
    already measured on the same chunks (that condition is not run again). `tolerate(name)`: True
    for a condition whose non-finite loss is a result (a row with no number and the error's line
    as note) rather than an error; the baseline's never is. A non-finite loss is a
    NonFiniteError that starts with `where`, the condition's name at its "{}" or after it
    ("ablate: intervention 'zero' at blocks 11"). Fewer than 2 chunks is an error before any pass.

        >>> cmp = compare(model, chunks, {"none": None, "zero": lambda: intervene(model, found, "zero")})
        >>> cmp.row("zero")["verdict"]
        'harmful'
    """
    from torch import nn  # here, not at the top: the config reads HARMFUL, HARMLESS, RESAMPLES without torch

    from massive.measure.perplexity import chunk_nll

    if baseline not in conditions:
        raise MassiveError(f"{where}: the baseline {baseline!r} is not one of the conditions ({', '.join(conditions)})")
    _check_pairable(len(chunks), resamples, where)
    if harmless_factor > harmful_factor:
        raise MassiveError(
            f"{where}: the harmless factor {harmless_factor} exceeds the harmful factor {harmful_factor}"
        )
    known = dict(known or {})
    order = [baseline, *[c for c in conditions if c != baseline]]
    nll: dict[str, np.ndarray | None] = {}
    contexts: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for name in tqdm(order, desc=where, unit=" condition", disable=not progress):
        if name in known:
            nll[name] = np.asarray(known[name], dtype=np.float64)
            continue
        factory = conditions[name]
        with factory() if factory is not None else nullcontext() as ctx:
            contexts[name] = ctx
            runner = ctx if isinstance(ctx, nn.Module) else model
            try:
                nll[name] = chunk_nll(runner, chunks, batch_size, device, where=named(where, name))
            except NonFiniteError as exc:
                if name == baseline or tolerate is None or not tolerate(name):
                    raise
                nll[name], notes[name] = None, str(exc).splitlines()[0]
    nll = {name: nll[name] for name in conditions}  # the caller's order
    table = summarise(
        nll, baseline, resamples, seed, harmful_factor, harmless_factor, int(chunks[:, 1:].numel()), notes, where
    )
    return Comparison(baseline, table, nll, contexts)
