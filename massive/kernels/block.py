"""The capture's reduction of one block output: every statistic massive/measure/capture.py records, in one call.

`block_stats(h, k, thr)` takes a block output h [n, T, D] (n sequences) and returns, per sequence,
in float32 whatever h's dtype (a BlockStats of tensors on h's device):
  median   [n]       the median |a| (the lower middle value, as torch.median)
  values   [n, k]    the k largest |a|, descending; among equal |a| the lowest flat index first
  signed   [n, k]    the signed a at those entries
  indices  [n, k]    flat indices into h[i] ([T, D] row-major)
  counts   [n, C]    exact counts of |a| > max(min_abs, min_ratio x median) (massive), for each of
                     the C (min_abs, min_ratio) pairs of the thresholds' ladders (Thresholds.massive)
  dim_max  [D]       max |a| per feature dim over every sequence and position
  dim_counts [C', D] per dim, the positions with |a| > outlier_abs and > outlier_ratio x median
                     (outlier, each pair of Thresholds.outlier), then above each massive pair
  finite   [n] bool  whether h[i] is free of inf and NaN (the statistics of a row that is not are
                     meaningless: the caller raises)
  tied     [n] bool  the device path met a tie at the k-th value that crosses the cut (which of the
                     tied entries to keep needs the exact path; the caller redoes the batch with it)

Two paths:
  host    (CPU tensors; `sync=True`): numpy, row by row (`_row`), a few passes over each row while
          it is in the core's cache. One strided sample of the row (about SAMPLE entries, a stride
          coprime with D, so every dim is sampled) and one selection in it give three guesses:
            median: two order statistics SPREAD standard deviations of the sample's rank either side
            of it; one pass counts the entries below the bracket and keeps those inside (about 3%),
            and a selection among those gives the exact median (a bracket that misses it: a
            selection over the whole row);
            top-k: a value with about max(4k + 36, 16 x stride) entries above it: those entries are
            the candidates, in index order, and a stable sort of those at or above their k-th largest
            value gives the top-k with ties cut by index (too few candidates: torch.topk with the tie
            fix).
          Every count (per sequence and per dim, at every pair of the ladders, outlier and massive)
          comes from the entries above the lowest of their thresholds, found in one pass (or among
          the candidates when it lies above their value): each entry's number of thresholds below it,
          a histogram per dim, sums from the top. When the sample says more than 1/16 of the row lies
          above it (an outlier threshold below the bulk, saturation), the massive pairs come from the
          entries above theirs and the outlier pairs from passes over the dims whose max passes.
  device  (CUDA; `sync=False`): no value goes to the host, so the device is never synchronised:
          torch.kthvalue for the median, then the Triton kernel (massive/kernels/triton_topk.py: top-k,
          dim max and every count in one read of h per sequence) or, without Triton, torch ops
          (a tie at the k-th value that crosses the cut is flagged in `tied`: the caller redoes the
          batch on the host path).
Both give the same numbers: the same median element, the same top-k entries in the same order, the
same exact counts.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from massive.kernels.topk import top_abs_torch, triton_available

SAMPLE = 8192  # entries of the strided sample that guesses each row's order statistics (host path)
SMALL = 16384  # rows shorter than this are reduced by selections over the whole row
SPREAD = 3  # the median's bracket: this many standard deviations of the sample's rank either side


def _ladder(values) -> tuple[float, ...]:
    """A threshold or a ladder of them as a sorted tuple of floats without repeats."""
    values = [values] if isinstance(values, (int, float)) else list(values)
    return tuple(sorted({float(v) for v in values}))


@dataclass(frozen=True)
class Thresholds:
    """What the exact counts count, each a threshold or a ladder of them: per sequence and per dim,
    |a| above max(a, r x median) for every (a, r) of min_abs x min_ratio (massive); per dim, |a|
    above max(a, r x median) for every (a, r) of outlier_abs x outlier_ratio (outlier features).
    A ladder lets detection pick any of its thresholds later without a new capture."""

    min_abs: tuple[float, ...] | float = 100.0
    min_ratio: tuple[float, ...] | float = 1000.0
    outlier_abs: tuple[float, ...] | float = 6.0
    outlier_ratio: tuple[float, ...] | float = 9.0

    def __post_init__(self):
        for name in ("min_abs", "min_ratio", "outlier_abs", "outlier_ratio"):
            object.__setattr__(self, name, _ladder(getattr(self, name)))

    @property
    def massive(self) -> list[tuple[float, float]]:
        """The (min_abs, min_ratio) pairs counted, in the order of the counts' columns."""
        return [(a, r) for a in self.min_abs for r in self.min_ratio]

    @property
    def outlier(self) -> list[tuple[float, float]]:
        """The (outlier_abs, outlier_ratio) pairs counted per dim, before the massive pairs."""
        return [(a, r) for a in self.outlier_abs for r in self.outlier_ratio]

    def of(self, med: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(count thresholds [n, A + R], per-dim thresholds [n, len(outlier) + A + R]) for the medians
        `med` [n], in float32 (as |a| is compared). The massive ones are a basis, not the pairs: each
        min_abs a, then max(min_abs[0], r x median) for each min_ratio r; for a given sequence (and
        dim) the count above max(a, r x median) is the smaller of the counts above a and above
        max(min_abs[0], r x median) (`pairs` combines them), so A + R thresholds give the A x R counts."""
        f32 = np.float32  # scalars, so that nothing is read back from a device
        floor = f32(self.min_abs[0])
        basis = [torch.full_like(med, f32(a)) for a in self.min_abs] + [
            torch.clamp(med * f32(r), min=floor) for r in self.min_ratio
        ]
        outlier = [torch.clamp(med * f32(r), min=f32(a)) for a, r in self.outlier]
        return torch.stack(basis, dim=1), torch.stack(outlier + basis, dim=1)

    def every(self, med: np.float32) -> np.ndarray:
        """The thresholds of every pair for one sequence of median |a| `med`, in float32 [len(outlier) +
        A x R]: max(a, r x median) for each (a, r) of `outlier`, then of `massive` (the rows of
        dim_counts), the same float32 values as `of` and `pairs` compare with."""
        a, r = self._every
        return np.maximum(a, np.float32(med) * r)

    @functools.cached_property
    def _every(self) -> tuple[np.ndarray, np.ndarray]:
        pairs = self.outlier + self.massive
        return np.array([a for a, _ in pairs], dtype=np.float32), np.array([r for _, r in pairs], dtype=np.float32)

    def pairs(self, counts: torch.Tensor) -> torch.Tensor:
        """The counts above each massive pair (min_abs a, min_ratio r) [..., A x R], in the order of
        `massive`, from the counts above the basis of `of` [..., A + R] (the same sequence's)."""
        a = len(self.min_abs)
        return torch.minimum(counts[..., :a, None], counts[..., None, a:]).flatten(-2)

    def dim_pairs(self, dim_counts: torch.Tensor) -> torch.Tensor:
        """The per-dim counts [len(outlier) + A x R, D] summed over the sequences, from each sequence's
        counts above `of`'s per-dim thresholds [n, len(outlier) + A + R, D]."""
        o = len(self.outlier)
        massive = self.pairs(dim_counts[:, o:].transpose(1, 2)).transpose(1, 2)  # [n, A x R, D]
        return torch.cat([dim_counts[:, :o], massive], dim=1).sum(dim=0)


@dataclass
class BlockStats:
    median: torch.Tensor
    values: torch.Tensor
    signed: torch.Tensor
    indices: torch.Tensor
    counts: torch.Tensor
    dim_max: torch.Tensor
    dim_counts: torch.Tensor
    finite: torch.Tensor
    tied: torch.Tensor


def _coprime_step(n: int, d: int) -> int:
    """A stride near n / SAMPLE that shares no factor with the row width d, so that a strided sample
    walks through every feature dim instead of a few."""
    step = max(1, n // SAMPLE)
    while math.gcd(step, d) != 1:
        step += 1
    return step


@dataclass(frozen=True)
class _Plan:
    """How a row of `size` entries (width d) is sampled (every `step`-th entry) and at which of the
    sample's ranks its order statistics are read: `lo` and `hi` bracket the median
    (SPREAD standard deviations of the sample's rank either side), `top` puts about
    max(4k + 36, 16 x step) entries of the row above it (None: k too near the row's size)."""

    step: int
    lo: int
    hi: int
    top: int | None

    @property
    def kth(self) -> list[int]:
        return sorted({self.lo, self.hi} | ({self.top} if self.top is not None else set()))


@functools.lru_cache(maxsize=None)
def _plan(size: int, d: int, k: int) -> _Plan | None:
    """The sampling plan of a row (None: too short to sample, selections over the whole row)."""
    if size < SMALL:
        return None
    step = _coprime_step(size, d)
    s = len(range(0, size, step))
    c = ((size - 1) // 2) * s // size  # the median's rank in the sample
    w = int(SPREAD * math.sqrt(s) / 2) + 2  # the sample's rank has a standard deviation of about sqrt(s) / 2
    want = 4 * (k + 1) + 32
    above = max(16, -(-want * s // size))  # sample entries above the top-k's guess
    top = s - 1 - above if want * 4 <= size and above < s // 4 else None
    return _Plan(step, max(c - w, 0), min(c + w, s - 1), top)


_scratch = threading.local()


def _mask(size: int, i: int = 0) -> np.ndarray:
    """Boolean buffer i (0 or 1) of `size` entries for this thread (a capture may run in any thread),
    reused from row to row: a fresh one per comparison would be paged in anew each time."""
    bufs = getattr(_scratch, "masks", None)
    if bufs is None or bufs[0].size != size:
        bufs = _scratch.masks = (np.empty(size, dtype=bool), np.empty(size, dtype=bool))
    return bufs[i]


def _above(x: np.ndarray, v) -> np.ndarray:
    """The flat indices of the entries of x above v, ascending."""
    return np.flatnonzero(np.greater(x, v, out=_mask(x.size)))


def _median_in(x: np.ndarray, lo: np.float32, hi: np.float32) -> np.float32:
    """The lower median of the row x, exactly np.partition's value: one pass counts the entries below
    lo and keeps those in [lo, hi], a selection among those gives it when the bracket holds it, else a
    selection over the whole row."""
    size, m = x.size, (x.size - 1) // 2
    ge = np.greater_equal(x, lo, out=_mask(size))
    below = size - int(np.count_nonzero(ge))
    if below <= m:
        kept = np.compress(np.logical_and(ge, np.less_equal(x, hi, out=_mask(size, 1)), out=ge), x)
        if m < below + kept.size:
            return np.partition(kept, m - below)[m - below]
    return np.partition(x, m)[m]


def median_row(x: np.ndarray, d: int = 1) -> np.float32:
    """The lower median of the row x (float32 |a| >= 0, finite): exactly np.partition's value, from a
    strided sample's bracket around it (SPREAD standard deviations of its rank either side), one pass
    that counts the entries below it and keeps those inside, and a selection among those."""
    plan = _plan(x.size, d, 1)
    if plan is None:
        return np.partition(x, (x.size - 1) // 2)[(x.size - 1) // 2]
    part = np.partition(x[:: plan.step], [plan.lo, plan.hi])
    return _median_in(x, part[plan.lo], part[plan.hi])


def median_lower(a: torch.Tensor, d: int = 1) -> torch.Tensor:
    """The lower median of each row of a [n, N] (float32, |a| >= 0, on the CPU), exactly torch.median's
    value, selected without sorting the row (median_row).

        >>> median_lower(torch.tensor([[1.0, 3.0, 2.0, 5.0]]))
        tensor([2.])
    """
    x = a.numpy()
    return torch.from_numpy(np.array([median_row(row, d) for row in x], dtype=np.float32))


def _top(x: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """The flat indices of the k largest entries of x, |a| descending, among equal |a| the lowest index
    first, given candidates `cand` (ascending indices, at least k of them) that hold every entry at or
    above the k-th largest: a stable sort of the candidates at or above their k-th largest value."""
    vals = x[cand]
    if cand.size > 4 * k:  # keep those at or above the k-th largest candidate value (ties included)
        keep = vals >= np.partition(vals, cand.size - k)[cand.size - k]
        cand, vals = cand[keep], vals[keep]
    return cand[np.argsort(-vals, kind="stable")[:k]]


def _per_dim(idx: np.ndarray, vals: np.ndarray, above: np.ndarray, d: int) -> np.ndarray:
    """[C, d]: per threshold above[c] and dim, how many of the entries (flat indices idx, values vals)
    are above it: each entry's number of thresholds below it (a search among them, sorted), a histogram
    of those per dim, and its sums from the top."""
    order = np.argsort(above, kind="stable")
    j = np.searchsorted(above[order], vals, side="left")  # the sorted thresholds below each value
    hist = np.bincount(j * d + idx % d, minlength=(above.size + 1) * d).reshape(above.size + 1, d)
    for c in range(above.size, 1, -1):  # above the c-th smallest: more than c of them below it
        hist[c - 1] += hist[c]
    out = np.empty((above.size, d), dtype=np.int64)
    out[order] = hist[1:]
    return out


def _row(x: np.ndarray, mx: np.ndarray, k: int, d: int, thr: Thresholds) -> tuple:
    """(top-k flat indices, median, per-dim counts above every pair's threshold [len(outlier) + A x R,
    d]) of one row x (float32 |a|, finite) whose per-dim maxima are mx: the module docstring's host path."""
    size, m = x.size, (x.size - 1) // 2
    plan = _plan(size, d, k)
    t = None
    if plan is None:
        med = np.partition(x, m)[m]
    else:
        s = np.partition(x[:: plan.step], plan.kth)
        med = _median_in(x, s[plan.lo], s[plan.hi])
        if plan.top is not None:
            t = s[plan.top]
    above = thr.every(med)
    low = above.min()

    def few(v) -> bool:  # the sample says that at most 1/16 of the row lies above v
        return plan is not None and np.count_nonzero(s > v) * plan.step <= size // 16

    hot = cand = None  # the entries above low; the top-k's candidates, every entry above t
    if t is not None:
        if low < t and few(low):
            hot = _above(x, low)
            cand = hot[x[hot] > t]
        else:
            cand = _above(x, t)
    if cand is None or cand.size < k + 1:  # a short row or a guess that keeps too few: torch.topk, ties by index
        idx = top_abs_torch(torch.from_numpy(x), k).indices.numpy()
        t, cand = x[idx[-1]], np.sort(idx)  # every entry above the k-th |a| is in the top-k
    else:
        idx = _top(x, cand, k)
    if hot is None and low >= t:
        hot = cand[x[cand] > low]
    if hot is not None:
        return idx, med, _per_dim(hot, x[hot], above, d)
    # many entries above the lowest threshold: the massive pairs from the entries above theirs, the
    # outlier pairs per dim over the dims whose max passes
    o = len(thr.outlier)
    low = above[o:].min()
    hot = cand[x[cand] > low] if low >= t else _above(x, low)
    dc = np.zeros((above.size, d), dtype=np.int64)
    dc[o:] = _per_dim(hot, x[hot], above[o:], d)
    x2 = x.reshape(-1, d)
    for c in range(o):
        cols = np.flatnonzero(mx > above[c])  # only dims whose max passes can count
        if len(cols) > d // 8:
            dc[c] = np.count_nonzero(x2 > above[c], axis=0)
        elif len(cols):
            dc[c, cols] = np.count_nonzero(x2[:, cols] > above[c], axis=0)
    return idx, med, dc


def _signed(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """The signed values of x [n, ...] (on the CPU) at the flat indices idx [n, k], in float32."""
    if x.dtype in (torch.float32, torch.float16):  # (numpy has no bfloat16)
        return torch.from_numpy(np.take_along_axis(x.reshape(len(x), -1).numpy(), idx, axis=1).astype(np.float32))
    return torch.gather(x.reshape(len(x), -1), 1, torch.from_numpy(idx)).to(torch.float32)


def _host(x: torch.Tensor, a: torch.Tensor, k: int, thr: Thresholds) -> BlockStats:
    n, d = x.shape[0], x.shape[-1]
    row_max = a.view(n, -1, d).amax(dim=1)  # [n, D]; inf and NaN propagate
    mn = row_max.numpy()
    finite = np.isfinite(mn).all(axis=1)
    if not finite.all():  # the caller raises: no statistic of it is used
        z = torch.zeros
        return BlockStats(
            z(n),
            z(n, k),
            z(n, k),
            z(n, k, dtype=torch.int64),
            z(n, len(thr.massive), dtype=torch.int64),
            row_max.amax(dim=0),
            z(len(thr.outlier) + len(thr.massive), d, dtype=torch.int64),
            torch.from_numpy(finite),
            z(n, dtype=torch.bool),
        )
    # one row after another: threads side by side gained nothing (16 x 256 and 2 x 2,048 tokens of
    # SmolLM2-135M on 2 threads, docs/capture_speed.md), as np.partition and the short calls hold the GIL
    an = a.numpy()
    rows = [_row(an[r], mn[r], k, d, thr) for r in range(n)]
    idx = np.stack([i for i, _, _ in rows])
    dim_counts = np.stack([dc for _, _, dc in rows])  # [n, len(outlier) + A x R, D]
    t = torch.from_numpy
    return BlockStats(
        t(np.array([m for _, m, _ in rows], dtype=np.float32)),
        t(np.take_along_axis(an, idx, axis=1)),
        _signed(x, idx),
        t(idx),
        t(dim_counts[:, len(thr.outlier) :].sum(axis=2)),
        row_max.amax(dim=0),
        t(dim_counts.sum(axis=0)),
        t(finite),
        torch.zeros(n, dtype=torch.bool),
    )


def _order(a: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept flat indices idx [n, k] in the capture's order (|a| descending, then index
    ascending) -> (values, signed, indices)."""
    idx, _ = torch.sort(idx, dim=1)
    order = torch.sort(torch.gather(a, 1, idx), dim=1, descending=True, stable=True).indices
    idx = torch.gather(idx, 1, order)
    return torch.gather(a, 1, idx), torch.gather(x.reshape(len(x), -1), 1, idx).to(torch.float32), idx


def _dim_counts_full(a3: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """[n, C, D]: per sequence and dim, the entries of a3 [n, T, D] above thr [n, C] (a pass per threshold)."""
    return torch.stack([(a3 > thr[:, c, None, None]).sum(dim=1) for c in range(thr.shape[1])], dim=1)


def _device(x: torch.Tensor, a: torch.Tensor, k: int, thr: Thresholds, backend: str) -> BlockStats:
    n, d, size = x.shape[0], x.shape[-1], a.shape[1]
    med = a.kthvalue((size - 1) // 2 + 1, dim=1).values
    count_thr, dim_thr = thr.of(med)
    if backend == "triton":
        from massive.kernels.triton_topk import top_abs_triton

        parts = [
            top_abs_triton(x[i], k, count_above=count_thr[i], dim_count_above=dim_thr[i], check=False) for i in range(n)
        ]
        stack = lambda f: torch.stack([getattr(p, f) for p in parts])  # noqa: E731
        finite = torch.isfinite(stack("token_max")).all(dim=1) & torch.isfinite(med)
        return BlockStats(
            med,
            stack("values"),
            stack("signed"),
            stack("indices"),
            thr.pairs(stack("counts")),
            stack("dim_max").amax(dim=0),
            thr.dim_pairs(stack("dim_counts")),
            finite,
            torch.zeros(n, dtype=torch.bool, device=x.device),
        )
    vals, idx = torch.topk(a, min(k + 1, size), dim=1, sorted=True)
    finite = torch.isfinite(vals[:, 0])
    tied = (vals[:, k] == vals[:, k - 1]) if k < size else torch.zeros(n, dtype=torch.bool, device=x.device)
    values, signed, idx = _order(a, x, idx[:, :k])
    counts = torch.stack([(a > count_thr[:, c, None]).sum(dim=1) for c in range(count_thr.shape[1])], dim=1)
    a3 = a.view(n, -1, d)
    return BlockStats(
        med,
        values,
        signed,
        idx,
        thr.pairs(counts),
        a3.amax(dim=(0, 1)),
        thr.dim_pairs(_dim_counts_full(a3, dim_thr)),
        finite,
        tied,
    )


def block_stats(
    x: torch.Tensor,
    k: int,
    thr: Thresholds = Thresholds(),
    backend: str = "auto",
    sync: bool | None = None,
    out: torch.Tensor | None = None,
) -> BlockStats:
    """The capture's statistics of x [n, ..., D] per x[i] (module docstring). `sync` None: the host
    path on the CPU, the device path elsewhere; `backend` (auto | torch | triton) picks the device
    path's top-k; `out` (float32, x's shape) is a buffer for |x| to reuse."""
    backend = getattr(backend, "value", backend)
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"unknown top-k backend {backend!r} (auto, torch, triton)")
    n = x.shape[0]
    x = x.detach()
    if out is None:
        a = x.to(torch.float32).abs()
    else:
        a = torch.abs(x, out=out) if x.dtype == torch.float32 else out.copy_(x).abs_()
    a = a.view(n, -1)
    if sync is None:
        sync = not x.is_cuda
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_available() else "torch"
    if sync and backend == "torch":
        if a.is_cuda:  # (the exact redo of a batch whose ties the device path could not cut)
            r = _host(x.cpu(), a.cpu(), k, thr)
            return BlockStats(*(getattr(r, f).to(x.device) for f in BlockStats.__dataclass_fields__))
        return _host(x, a, k, thr)
    return _device(x, a, k, thr, backend)
