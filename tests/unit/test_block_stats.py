"""massive.kernels.block.block_stats against a brute-force reference (sorts and comparisons over the
whole row), on rows long enough for the host path to sample them (>= SMALL entries) and on short
ones: the median, the top-k (ties cut by index), every count at every pair of the ladders, the per-dim
maxima and counts. Rows are built to reach every branch: a bracket that holds the median, one that
misses it (the sample sees other values than the row), ties everywhere, saturation (more entries above
the thresholds than the sample's cut allows), outlier dims (few, or so many that the per-dim counts
take passes over the dims whose max passes), half precision."""

import random

import pytest
import torch

from massive.kernels import block
from massive.kernels.block import SMALL, Thresholds, block_stats, median_lower

SEED = random.randrange(2**31)
THR = Thresholds(
    min_abs=(50.0, 100.0, 200.0), min_ratio=(100.0, 1000.0, 5000.0), outlier_abs=(6.0,), outlier_ratio=(9.0,)
)


def reference(x: torch.Tensor, k: int, thr: Thresholds) -> dict:
    """Every statistic of x [n, T, D] by sorting and comparing over each whole row."""
    n, d = x.shape[0], x.shape[-1]
    a = x.float().abs().reshape(n, -1)
    size = a.shape[1]
    med = torch.sort(a, dim=1).values[:, (size - 1) // 2]
    order = torch.sort(a, dim=1, descending=True, stable=True).indices[:, :k]  # ties: lowest index first
    pair = lambda m, p: max(torch.tensor(p[0], dtype=torch.float32), m * torch.tensor(p[1], dtype=torch.float32))  # noqa: E731
    counts = torch.tensor([[int((a[i] > pair(med[i], p)).sum()) for p in thr.massive] for i in range(n)])
    dim_counts = sum(
        torch.stack([(a[i].view(-1, d) > pair(med[i], p)).sum(0) for p in thr.outlier + thr.massive]) for i in range(n)
    )
    return {
        "median": med,
        "indices": order,
        "values": torch.gather(a, 1, order),
        "signed": torch.gather(x.reshape(n, -1).float(), 1, order),
        "counts": counts,
        "dim_max": a.view(n, -1, d).amax(dim=(0, 1)),
        "dim_counts": dim_counts,
    }


def rows(kind: str, g: torch.Generator, t: int = 64, d: int = 300) -> torch.Tensor:
    """Three rows of t x d (t x d >= SMALL unless asked otherwise) of one kind."""
    if kind == "bulk":  # per-dim scales, planted massive entries at a few (token, dim)
        x = torch.randn(3, t, d, generator=g) * (0.5 + torch.rand(d, generator=g))
        x[:, 0, 7], x[:, 3, 7], x[1, 9, 100], x[2, 5, 11] = 3000.0, -2500.0, 900.0, -1e5
    elif kind == "ties":  # few distinct magnitudes: ties at the median, at the k-th value, at every count
        x = torch.randint(-3, 4, (3, t, d), generator=g).float()
        x[:, 0, :40] = 300.0
    elif kind == "saturated":  # a third of the row above every outlier threshold and many above min_abs
        x = torch.randn(3, t, d, generator=g)
        big = torch.rand(3, t, d, generator=g) < 0.35
        x[big] = 60.0 + 200.0 * torch.rand(int(big.sum()), generator=g)
    elif kind == "missed":  # the strided sample sees only zeros: its bracket cannot hold the median
        x = 1.0 + torch.rand(3, t, d, generator=g)
        plan = block._plan(t * d, d, 16)
        x.view(3, -1)[:, :: plan.step] = 0.0
        x[:, 1, 2] = 500.0
    elif kind in ("outliers", "wide"):  # outlier dims (every token above 9 x the median): 5 or 30 of 300
        x = torch.randn(3, t, d, generator=g)
        x[:, :, 40 : 40 + (5 if kind == "outliers" else 30)] = 20.0 + 20.0 * torch.rand(3, t, 1, generator=g)
        x[:, 2, 8], x[0, 7, 9] = 800.0, -6000.0
    elif kind == "short":  # shorter than SMALL: selections over the whole row
        x = torch.randn(3, 12, 40, generator=g)
        x[:, 0, 3] = 700.0
    return x


@pytest.mark.parametrize("kind", ["bulk", "outliers", "wide", "ties", "saturated", "missed", "short"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("k", [16, 64])  # ties with k=64: more at the k-th value than the sample's cut keeps
def test_block_stats_equals_the_reference(kind, dtype, sync, k):
    g = torch.Generator().manual_seed(SEED)
    x = rows(kind, g).to(dtype)
    assert (x[0].numel() >= SMALL) == (kind != "short")
    got = block_stats(x, k, THR, backend="torch", sync=sync)
    want = reference(x, k, THR)
    if not sync and bool(got.tied.any()):  # the device path flags a tie it cannot cut (the caller redoes it)
        top = x.float().abs().reshape(len(x), -1).topk(k + 1, dim=1).values
        assert torch.equal(got.tied, top[:, k] == top[:, k - 1])  # only where the k-th value is tied
        got = block_stats(x, k, THR, sync=True)
    for field, value in want.items():
        assert torch.equal(getattr(got, field), value), f"{field} ({kind}, {dtype}, sync={sync}, seed {SEED})"
    assert got.finite.all() and not got.tied.any()
    assert torch.equal(median_lower(x.float().abs().reshape(len(x), -1), x.shape[-1]), want["median"])


def test_the_samples_bracket_holds_the_median_on_real_looking_rows():
    """The sampled path, not its fallback, gives the median of rows like a model's block outputs (the
    fallback is exact too, only slower): the bracket holds it in each of 200 rows."""
    g = torch.Generator().manual_seed(SEED)
    x = (torch.randn(200, 256, 96, generator=g) * (0.2 + torch.rand(96, generator=g)) ** 3).abs()
    misses = 0
    for row in x.reshape(200, -1).numpy():
        plan = block._plan(row.size, 96, 16)
        s = torch.from_numpy(row[:: plan.step]).sort().values
        m = (row.size - 1) // 2
        below, inside = (row < s[plan.lo].item()).sum(), ((row >= s[plan.lo].item()) & (row <= s[plan.hi].item())).sum()
        misses += not below <= m < below + inside
    assert misses <= 3, f"{misses} of 200 brackets missed (seed {SEED})"
