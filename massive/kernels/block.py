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
  host    (CPU tensors; `sync=True`): numpy, row by row, reading small results to skip work. A
          strided sample of the row (a stride coprime with D, so every dim is sampled) gives
          order statistics that bracket what is wanted:
            median: one pass counts the entries below the bracket and keeps those inside (about
            6%), a selection among those gives the exact median (median_row; a row whose bracket
            misses falls back to a selection over the whole row);
            top-k: the entries above a value that the sample puts at about 4k entries are the
            candidates, compacted in index order, and a stable sort of them gives the top-k with
            ties cut by index (top_row; too few candidates: torch.topk with the tie fix).
          The entries above the lowest massive threshold are found among the candidates (one pass
          over the row only when it lies below their value: more pass than the top-k holds,
          saturation), and every massive count of the ladder is a search in their sorted values;
          the outlier magnitude is counted over the row, per dim only over dims whose max passes.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from massive.kernels.topk import top_abs_torch, triton_available

SAMPLE = 4096  # entries per row that bracket the median (host path)
SMALL = 16384  # rows shorter than this take torch.kthvalue at once


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
        min_abs a, then max(min_abs[0], r x median) for each min_ratio r; for a given sequence
        (and dim) the count above max(a, r x median) is the smaller of the counts above a and above
        max(min_abs[0], r x median) (`pairs` combines them), so A + R thresholds give the A x R counts."""
        f32 = np.float32  # scalars, so that nothing is read back from a device
        floor = f32(self.min_abs[0])
        basis = [torch.full_like(med, f32(a)) for a in self.min_abs] + [
            torch.clamp(med * f32(r), min=floor) for r in self.min_ratio
        ]
        outlier = [torch.clamp(med * f32(r), min=f32(a)) for a, r in self.outlier]
        return torch.stack(basis, dim=1), torch.stack(outlier + basis, dim=1)

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


def _bracket(x: np.ndarray, d: int, ranks: list[int], step: int | None = None) -> list[float]:
    """Order statistics of a strided sample of the row x (a stride coprime with the width d, by
    default about x.size / SAMPLE) at the ranks `ranks` of the row (0-based), each from the
    sample's matching rank."""
    step = _coprime_step(x.size, d) if step is None else step
    s = x[::step]
    at = [min(max(r * s.size // x.size, 0), s.size - 1) for r in ranks]
    part = np.partition(s, sorted(set(at)))
    return [float(part[i]) for i in at]


def median_row(x: np.ndarray, d: int = 1) -> np.float32:
    """The lower median of the row x (float32 |a| >= 0, finite): exactly np.partition's value, from a
    strided sample's bracket around it (about 4 standard deviations wide), one pass that counts the
    entries below it and keeps those inside, and a selection among those."""
    size = x.size
    m = (size - 1) // 2
    if size >= SMALL:
        s = size // _coprime_step(size, d) + 1
        half = (2 * int(math.sqrt(s)) + 2) * size // s  # about 4 standard deviations of the sample's rank
        lo, hi = _bracket(x, d, [m - half, m + half])
        ge = x >= np.float32(lo)
        below = size - int(np.count_nonzero(ge))
        kept = x[ge & (x <= np.float32(hi))]
        if below <= m < below + kept.size:
            return np.partition(kept, m - below)[m - below]
    return np.partition(x, m)[m]


def median_lower(a: torch.Tensor, d: int = 1) -> torch.Tensor:
    """The lower median of each row of a [n, N] (float32, |a| >= 0, on the CPU), exactly torch.median's
    value, selected without sorting the row (median_row).

        >>> median_lower(torch.tensor([[1.0, 3.0, 2.0, 5.0]]))
        tensor([2.])
    """
    x = a.numpy()
    return torch.from_numpy(np.array([median_row(row, d) for row in x], dtype=np.float32))


def top_row(x: np.ndarray, k: int, d: int = 1) -> tuple[np.ndarray, float] | None:
    """(the flat indices of the k largest entries of the row x, |a| descending, among equal |a| the
    lowest index first; the value t such that every entry above t is among `candidates`) or None
    when the sample's guess keeps fewer than k entries: the candidates are the entries above a
    value that a strided sample puts at about 4k entries, compacted in index order, so a stable
    sort of them gives the order at once."""
    size = x.size
    want = 4 * (k + 1) + 32
    if want * 4 > size:
        return None
    # a sample that puts about 16 of its entries above t, whatever the row's length
    (t,) = _bracket(x, d, [size - want], _coprime_step(min(size, want * SAMPLE // 16), d))
    cand = np.flatnonzero(x > np.float32(t))
    if cand.size < k + 1:
        return None
    order = np.argsort(-x[cand], kind="stable")[:k]
    return cand, t, cand[order]


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


@functools.lru_cache(maxsize=None)
def _pools(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="block_stats")


def _pool() -> ThreadPoolExecutor:
    """A pool of as many threads as torch uses, for the host path's rows."""
    return _pools(torch.get_num_threads())


def _host(x: torch.Tensor, a: torch.Tensor, k: int, thr: Thresholds) -> BlockStats:
    n, d = x.shape[0], x.shape[-1]
    row_max = a.view(n, -1, d).amax(dim=1)  # [n, D]; inf and NaN propagate
    finite = torch.isfinite(row_max).all(dim=1)
    if not bool(finite.all()):  # the caller raises: no statistic of it is used
        z = torch.zeros
        return BlockStats(
            z(n),
            z(n, k),
            z(n, k),
            z(n, k, dtype=torch.int64),
            z(n, len(thr.massive), dtype=torch.int64),
            row_max.amax(dim=0),
            z(len(thr.outlier) + len(thr.massive), d, dtype=torch.int64),
            finite,
            z(n, dtype=torch.bool),
        )
    an, mn = a.numpy(), row_max.numpy()
    med = np.array(
        list(_pool().map(lambda row: median_row(row, d), an))
        if n > 1 and torch.get_num_threads() > 1
        else [median_row(row, d) for row in an],
        dtype=np.float32,
    )
    count_thr, dim_thr = (t.numpy() for t in thr.of(torch.from_numpy(med)))

    def one(r: int) -> tuple[np.ndarray, list[int], np.ndarray]:  # (top-k indices, counts, dim counts) of row r
        row = an[r]
        top = top_row(row, k, d)
        if top is None:  # k near the row's size: torch.topk with the ties cut by index
            i = top_abs_torch(x[r], k).indices.numpy()
            cand, t = i, float(row[i[-1]])  # every entry above the k-th |a| is in the top-k
        else:
            cand, t, i = top
        # the entries above the lowest count threshold: among the candidates when it is at or above t,
        # else one pass; each count above a threshold at or above it is then counted over those alone
        low = np.float32(count_thr[r].min())
        hot = cand[row[cand] > low] if low >= t else np.flatnonzero(row > low)
        ranked = np.sort(row[hot])
        counts = ranked.size - np.searchsorted(ranked, count_thr[r], side="right")
        dc = np.zeros((dim_thr.shape[1], d), dtype=np.int64)
        for c, v in enumerate(dim_thr[r]):
            if v >= low:
                dc[c] = np.bincount(hot[row[hot] > v] % d, minlength=d)
                continue
            cols = np.flatnonzero(mn[r] > v)  # only dims whose max passes can count
            if len(cols) > d // 8:
                dc[c] = np.count_nonzero(row.reshape(-1, d) > v, axis=0)
            elif len(cols):
                dc[c, cols] = np.count_nonzero(row.reshape(-1, d)[:, cols] > v, axis=0)
        return i, counts, dc

    # the rows side by side on torch's threads (numpy lets go of the GIL in these loops)
    rows = list(_pool().map(one, range(n))) if n > 1 and torch.get_num_threads() > 1 else [one(r) for r in range(n)]
    idx = np.stack([i for i, _, _ in rows])
    counts = np.array([c for _, c, _ in rows], dtype=np.int64).reshape(n, count_thr.shape[1])
    dim_counts = np.stack([dc for _, _, dc in rows])
    t = torch.from_numpy
    values = np.take_along_axis(an, idx, axis=1)
    signed = torch.gather(x.reshape(n, -1), 1, t(idx)).to(torch.float32)
    return BlockStats(
        t(med),
        t(values),
        signed,
        t(idx),
        thr.pairs(t(counts)),
        row_max.amax(dim=0),
        thr.dim_pairs(t(dim_counts)),
        finite,
        torch.zeros(n, dtype=torch.bool),
    )


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
