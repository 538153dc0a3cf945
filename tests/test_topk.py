"""The torch top-|a| reduction: against a stable-sort reference, row by row and batched."""

import random

import pytest
import torch

from kernels.topk import TopAbs, top_abs, top_abs_rows, top_abs_torch


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
        assert_same(TopAbs(*(getattr(rows, f)[i] for f in ("values", "signed", "indices", "dim_max", "token_max"))), one)


def test_nan_raises():
    x = torch.ones(4, 4)
    x[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        top_abs_torch(x, 2)
    with pytest.raises(ValueError, match="NaN"):
        top_abs_rows(x[None], 2, backend="torch")
