"""Top-k of |a| over a hidden state, with per-dim and per-token maxima: the capture's one reduction.

`top_abs(x, k)` is the only function the capture calls. It returns, for a tensor x of shape
[..., D]:
  values   [k]  float32  the k largest |a|, descending
  signed   [k]  float32  the signed a at those entries
  indices  [k]  int64    flat (row-major) indices into x's logical shape
  dim_max  [D]  float32  max |a| per feature dim (over all leading positions)
  token_max [N] float32  max |a| per row, N = x.numel() // D
  counts   [C]  int64    the exact number of entries with |a| > count_above[c] (optional)
  dim_counts [C', D] int64  per feature dim, the entries with |a| > dim_count_above[c] (optional)
Ties are resolved deterministically: among equal |a|, the lowest flat index comes first.
inf is a valid value; NaN raises ValueError. Values are compared in float32.

Dispatch: backend "auto" uses the Triton kernel (massive/kernels/triton_topk.py) for CUDA tensors when
Triton is importable, and torch otherwise; "torch" and "triton" force a path.
"""

from __future__ import annotations

import torch

from massive.kernels.result import TopAbs, check_args, thresholds


def _counts(a: torch.Tensor, d: int, count_above, dim_count_above) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts [..., C], dim_counts [..., C', D]) of a = |x| flattened per row: [..., numel]."""
    lead = a.shape[:-1]
    t1, t2 = thresholds(count_above, a.device), thresholds(dim_count_above, a.device)
    if t1.dim() == 1:
        t1 = t1.expand(*lead, t1.numel())
    if t2.dim() == 1:
        t2 = t2.expand(*lead, t2.numel())
    counts = (
        torch.stack([(a > t1[..., c : c + 1]).sum(-1) for c in range(t1.shape[-1])], dim=-1)
        if t1.shape[-1]
        else torch.zeros(*lead, 0, dtype=torch.int64, device=a.device)
    )
    a3 = a.reshape(*lead, -1, d)
    dim_counts = (
        torch.stack([(a3 > t2[..., c, None, None]).sum(-2) for c in range(t2.shape[-1])], dim=-2)
        if t2.shape[-1]
        else torch.zeros(*lead, 0, d, dtype=torch.int64, device=a.device)
    )
    return counts, dim_counts


def top_abs_torch(x: torch.Tensor, k: int, count_above=None, dim_count_above=None) -> TopAbs:
    """Reference implementation in torch (any device)."""
    check_args(x, k)
    d = x.shape[-1]
    a = x.detach().to(torch.float32).abs().reshape(-1)
    vals, idx = torch.topk(a, k, sorted=True)
    if torch.isnan(vals[0]):
        raise ValueError("top_abs input contains NaN")
    kth = vals[-1]
    n_tied_kept = int((vals == kth).sum())
    if int((a == kth).sum()) > n_tied_kept:
        # which of the entries tied with the k-th value are kept is implementation-defined in
        # torch.topk: keep the lowest flat indices, as the Triton kernel does
        above = torch.nonzero(a > kth).reshape(-1)
        tied = torch.nonzero(a == kth).reshape(-1)[: k - above.numel()]
        idx = torch.cat([above, tied])
    idx, _ = torch.sort(idx)
    order = torch.sort(a[idx], descending=True, stable=True).indices
    idx = idx[order]
    flat = x.detach().reshape(-1)
    a2 = a.reshape(-1, d)
    counts, dim_counts = _counts(a, d, count_above, dim_count_above)
    return TopAbs(
        values=a[idx],
        signed=flat[idx].to(torch.float32),
        indices=idx,
        dim_max=a2.amax(dim=0),
        token_max=a2.amax(dim=1),
        counts=counts,
        dim_counts=dim_counts,
    )


def top_abs_rows_torch(x: torch.Tensor, k: int, count_above=None, dim_count_above=None) -> TopAbs:
    """`top_abs_torch` of every x[i] at once (x: [rows, ..., D]); fields gain a leading rows dim.
    The thresholds are [C] (every row) or [rows, C] (one set per row)."""
    check_args(x[0], k)
    rows, d = x.shape[0], x.shape[-1]
    a = x.detach().to(torch.float32).abs().reshape(rows, -1)
    vals, idx = torch.topk(a, k, dim=1, sorted=True)
    if torch.isnan(vals[:, 0]).any():
        raise ValueError("top_abs input contains NaN")
    kth = vals[:, -1:]
    tied_total = (a == kth).sum(dim=1)
    tied_kept = (vals == kth).sum(dim=1)
    for r in torch.nonzero(tied_total > tied_kept).flatten().tolist():  # rare: ties cut at the k-th value
        idx[r] = top_abs_torch(x[r], k).indices
    idx, _ = torch.sort(idx, dim=1)
    order = torch.sort(torch.gather(a, 1, idx), dim=1, descending=True, stable=True).indices
    idx = torch.gather(idx, 1, order)
    a3 = a.reshape(rows, -1, d)
    counts, dim_counts = _counts(a, d, count_above, dim_count_above)
    return TopAbs(
        values=torch.gather(a, 1, idx),
        signed=torch.gather(x.detach().reshape(rows, -1), 1, idx).to(torch.float32),
        indices=idx,
        dim_max=a3.amax(dim=1),
        token_max=a3.amax(dim=2),
        counts=counts,
        dim_counts=dim_counts,
    )


FIELDS = ("values", "signed", "indices", "dim_max", "token_max", "counts", "dim_counts")


def top_abs_rows(x: torch.Tensor, k: int, backend: str = "auto", count_above=None, dim_count_above=None) -> TopAbs:
    """`top_abs` of every x[i] (a batch of sequences); fields gain a leading rows dim. The count
    thresholds are [C] (every row) or [rows, C] (one set per row, e.g. from each row's median).

    The torch path reduces all rows in one call; the Triton kernel runs once per row."""
    backend = getattr(backend, "value", backend)
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_available() else "torch"
    if backend == "torch":
        return top_abs_rows_torch(x, k, count_above, dim_count_above)
    rows = x.shape[0]

    def row(t, i):
        t = thresholds(t, x.device)
        return t[i] if t.dim() == 2 else t

    parts = [
        top_abs(x[i], k, backend=backend, count_above=row(count_above, i), dim_count_above=row(dim_count_above, i))
        for i in range(rows)
    ]
    return TopAbs(*(torch.stack([getattr(p, f) for p in parts]) for f in FIELDS))


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def top_abs(x: torch.Tensor, k: int, backend: str = "auto", count_above=None, dim_count_above=None) -> TopAbs:
    """The top-k of |a| and the maxima of x (module docstring); with `count_above` (thresholds
    [C]) the exact number of entries above each, with `dim_count_above` ([C']) those per dim."""
    backend = getattr(backend, "value", backend)
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_available() else "torch"
    if backend == "torch":
        return top_abs_torch(x, k, count_above, dim_count_above)
    if backend == "triton":
        from massive.kernels.triton_topk import top_abs_triton

        return top_abs_triton(x, k, count_above=count_above, dim_count_above=dim_count_above)
    raise ValueError(f"unknown top-k backend {backend!r} (auto, torch, triton)")
