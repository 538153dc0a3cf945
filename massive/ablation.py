"""How sure an ablation is: a paired bootstrap over perplexity chunks, and the verdict it supports.

An intervention's effect is the ratio of its perplexity to the baseline's on the same chunks,
exp(mean NLL under it - mean NLL of the baseline). The chunks are the unit of resampling: a
seeded paired bootstrap (scipy.stats.bootstrap, percentile method) draws chunk indices with
replacement, the same for both, and gives the 95% interval of the ratio (and of each perplexity
alone). The verdict reads the interval, not the point:

  harmful       the interval's lower bound exceeds harmful_factor
  harmless      its upper bound is below harmless_factor
  inconclusive  otherwise (too few chunks, or an effect between the two factors)

    >>> ci = ratio_interval(nll_zero, nll_none, resamples=1000, seed=1)
    >>> ci.ratio, ci.ratio_lo, ci.ratio_hi
    (30814.2, 24410.7, 38120.5)
    >>> verdict(ci.ratio_lo, ci.ratio_hi, harmful_factor=2.0, harmless_factor=1.1)
    'harmful'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from massive.errors import MassiveError, check_finite

CONFIDENCE = 0.95
VERDICTS = ("harmful", "harmless", "inconclusive")


@dataclass
class Interval:
    """An intervention's perplexity and ratio to the baseline, each with its 95% bootstrap interval."""

    perplexity: float
    ppl_lo: float
    ppl_hi: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    n_chunks: int
    resamples: int


def _percentile(data: tuple[np.ndarray, ...], statistic, resamples: int, seed: int) -> tuple[float, float]:
    res = stats.bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=resamples, method="percentile",
                          confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(nll: np.ndarray, base: np.ndarray, resamples: int, seed: int, where: str = "ablation") -> Interval:
    """The perplexity of per-chunk mean NLLs `nll` and its ratio to those of the baseline `base`
    on the same chunks, with seeded paired-bootstrap 95% intervals (`resamples` draws). Fewer
    than 2 chunks, unequal lengths, resamples < 1 or a non-finite result is an error naming `where`.

        >>> ci = ratio_interval(np.array([3.1, 3.6, 3.3]), np.array([3.0, 3.5, 3.3]), resamples=1000, seed=1)
        >>> round(ci.ratio, 4), ci.ratio_lo <= ci.ratio <= ci.ratio_hi
        (1.0689, True)
    """
    nll, base = np.asarray(nll, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if resamples < 1:
        raise MassiveError(f"{where}: the bootstrap needs at least 1 resample (got {resamples})")
    if nll.shape != base.shape or nll.ndim != 1:
        raise MassiveError(f"{where}: per-chunk NLLs of shapes {nll.shape} and {base.shape} cannot be paired")
    if len(nll) < 2:
        raise MassiveError(f"{where}: a bootstrap interval needs at least 2 perplexity chunks (got {len(nll)}): "
                           f"raise ablate.max_chunks or use a longer corpus")
    for v in (*nll, *base):
        check_finite(float(v), f"{where}: a per-chunk NLL")
    ppl = lambda a, axis=-1: np.exp(a.mean(axis=axis))  # noqa: E731
    ratio = lambda a, b, axis=-1: np.exp(a.mean(axis=axis) - b.mean(axis=axis))  # noqa: E731
    out = Interval(float(ppl(nll)), *_percentile((nll,), ppl, resamples, seed), float(ratio(nll, base)),
                   *_percentile((nll, base), ratio, resamples, seed), n_chunks=len(nll), resamples=resamples)
    for key in ("perplexity", "ppl_lo", "ppl_hi", "ratio", "ratio_lo", "ratio_hi"):
        check_finite(getattr(out, key), f"{where}: the {key}")
    return out


def verdict(lo: float, hi: float, harmful_factor: float, harmless_factor: float) -> str:
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


# ---------------------------------------------------------------- reading the evidence
@dataclass
class Reading:
    """What one model on one corpus says: zeroing at each layers value swept (layers, blocks,
    where: in words, verdict, ratio, ratio_lo, ratio_hi, n_chunks, regrowth: massive.regrowth.Regrowth
    or None), and the layers value where zeroing hurts most (None unless several were swept; its
    `distinct`: whether its interval lies above every other one's)."""

    model: str
    corpus: str
    dims: str
    zero: list[dict]
    worst: dict | None


def where(layers: str, blocks: str) -> str:
    """An intervention's blocks in words.

        >>> where("emerge", "11"), where("from_emerge", "11,12,13"), where("2_3", "2,3")
        ('at block 11 (emerge)', 'at every block from 11 on (from_emerge)', 'at blocks 2,3')
    """
    bs = [b for b in str(blocks).split(",") if b]
    if not bs:
        return f"(layers {layers}: no block)"
    if layers == "from_emerge":
        return f"at every block from {bs[0]} on (from_emerge)"
    if len(bs) == 1:
        return f"at block {bs[0]}" + (f" ({layers})" if not layers[0].isdigit() else "")
    return f"at blocks {','.join(bs)}" + (f" ({layers})" if not layers[0].isdigit() else "")


def readings(table, regrowth, threshold: float = 0.5) -> list[Reading]:
    """One Reading per (model, corpus) of an ablation table (columns model, corpus, layers, blocks,
    dims, intervention, ratio_to_none, ratio_lo, ratio_hi, n_chunks, verdict) and its regrowth
    table (massive.regrowth.table with model, corpus, layers columns); `threshold`: the share of
    their unablated size at which zeroed activations count as back.

        >>> [r.zero[0]["verdict"] for r in readings(table, regrowth, 0.5)]
        ['harmful', 'harmful']
    """
    from massive.regrowth import comes_back

    out = []
    for (model, corpus), g in table.groupby(["model", "corpus"], sort=False):
        zeros = []
        for layers, run in g.groupby("layers", sort=False):
            z = run[run["intervention"] == "zero"]
            if z.empty:
                continue
            row = z.iloc[0]
            rg = regrowth[(regrowth["model"] == model) & (regrowth["corpus"] == corpus) & (regrowth["layers"] == layers)]
            zeros.append({"layers": layers, "blocks": row["blocks"], "where": where(layers, row["blocks"]),
                          "verdict": row["verdict"], "ratio": float(row["ratio_to_none"]), "ratio_lo": float(row["ratio_lo"]),
                          "ratio_hi": float(row["ratio_hi"]), "n_chunks": int(row["n_chunks"]),
                          "regrowth": comes_back(rg, "zero", threshold)})
        found = [z for z in zeros if z["verdict"] != "none found"]
        worst = dict(max(found, key=lambda z: z["ratio"])) if len(found) > 1 else None
        if worst is not None:  # is it worse than every other beyond their intervals?
            worst["distinct"] = all(z["ratio_hi"] < worst["ratio_lo"] for z in found if z["layers"] != worst["layers"])
        out.append(Reading(model, corpus, str(g["dims"].iloc[0]), zeros, worst))
    return out
