"""The torch top-|a| reduction: against a stable-sort reference, row by row and batched."""

import random

import pytest
import torch

from massive.kernels.topk import TopAbs, top_abs, top_abs_rows, top_abs_torch


def reference(x: torch.Tensor, k: int) -> TopAbs:
    a = x.float().abs().reshape(-1)
    order = torch.sort(a, descending=True, stable=True).indices[:k]  # ties: lowest flat index first
    d = x.shape[-1]
    return TopAbs(a[order], x.reshape(-1)[order].float(), order, a.view(-1, d).amax(0), a.view(-1, d).amax(1))


def assert_same(r: TopAbs, ref: TopAbs):
    for f in ("values", "signed", "indices", "dim_max", "token_max"):
        assert torch.equal(getattr(r, f), getattr(ref, f)), f


SEED = random.randrange(2**31)


@pytest.mark.parametrize("shape, k", [((7, 13), 1), ((7, 13), 91), ((3, 5, 8), 17), ((1, 1), 1), ((64, 33), 64)])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_the_stable_sort_reference(shape, k, ties):
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(shape, generator=g)
    if ties:  # few distinct magnitudes, both signs: ties everywhere, also at the k-th value
        x = torch.randint(-3, 4, shape, generator=g).float()
    x.view(-1)[0] = float("inf")
    assert_same(top_abs_torch(x, k), reference(x, k)), f"seed {SEED}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rows_equal_one_call_per_row(dtype):
    g = torch.Generator().manual_seed(SEED)
    x = torch.randint(-4, 5, (5, 9, 11), generator=g).to(dtype)  # ties
    x[2] = torch.randn(9, 11, generator=g).to(dtype)
    rows = top_abs_rows(x, 12, backend="torch")
    for i in range(5):
        one = top_abs(x[i], 12, backend="torch")
        assert_same(
            TopAbs(*(getattr(rows, f)[i] for f in ("values", "signed", "indices", "dim_max", "token_max"))), one
        )


def test_nan_raises():
    x = torch.ones(4, 4)
    x[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        top_abs_torch(x, 2)
    with pytest.raises(ValueError, match="NaN"):
        top_abs_rows(x[None], 2, backend="torch")


def brute_counts(x: torch.Tensor, above, dim_above):
    a = x.float().abs()
    return (
        torch.tensor([int((a > t).sum()) for t in above]),
        torch.stack([(a.reshape(-1, x.shape[-1]) > t).sum(0) for t in dim_above]),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_counts_match_brute_force_with_more_planted_entries_than_k(dtype):
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(4, 20, 16, generator=g)
    for r in range(4):  # 30 + 5r planted entries per row, far more than the top-8
        x[r].view(-1)[torch.randperm(320, generator=g)[: 30 + 5 * r]] = 500.0 * (
            1 + torch.rand(30 + 5 * r, generator=g)
        )
    x = x.to(dtype)
    above = torch.tensor([[100.0, 2.0, 600.0]] * 4) * torch.tensor([[1.0], [1.0], [0.5], [2.0]])  # one set per row
    dim_above = torch.tensor([[6.0, 400.0]] * 4)
    rows = top_abs_rows(x, 8, backend="torch", count_above=above, dim_count_above=dim_above)
    assert rows.counts.dtype == torch.int64 and rows.counts.shape == (4, 3) and rows.dim_counts.shape == (4, 2, 16)
    for r in range(4):
        counts, dims = brute_counts(x[r], above[r].tolist(), dim_above[r].tolist())
        assert torch.equal(rows.counts[r], counts) and torch.equal(rows.dim_counts[r], dims), f"seed {SEED}"
        assert rows.counts[r, 0] >= 30 > 8  # more pass than the top-k holds: the count says so
        one = top_abs(x[r], 8, backend="torch", count_above=above[r], dim_count_above=dim_above[r])
        assert torch.equal(one.counts, counts) and torch.equal(one.dim_counts, dims)
    none = top_abs(x[0], 8)
    assert none.counts.shape == (0,) and none.dim_counts.shape == (0, 16)
    with pytest.raises(ValueError, match="NaN"):
        top_abs(x[0], 8, count_above=[float("nan")])
