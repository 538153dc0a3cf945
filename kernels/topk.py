"""Top-k of |a| over a hidden state, with per-dim and per-token maxima: the capture's one reduction.

`top_abs(x, k)` is the only function the capture calls. It returns, for a tensor x of shape
[..., D]:
  values   [k]  float32  the k largest |a|, descending
  signed   [k]  float32  the signed a at those entries
  indices  [k]  int64    flat (row-major) indices into x's logical shape
  dim_max  [D]  float32  max |a| per feature dim (over all leading positions)
  token_max [N] float32  max |a| per row, N = x.numel() // D
Ties are resolved deterministically: among equal |a|, the lowest flat index comes first.
inf is a valid value; NaN raises ValueError. Values are compared in float32.

Dispatch: backend "auto" uses the Triton kernel (kernels/triton_topk.py) for CUDA tensors when
Triton is importable, and torch otherwise; "torch" and "triton" force a path.
"""

from __future__ import annotations

import torch

from kernels.result import TopAbs, check_args


def top_abs_torch(x: torch.Tensor, k: int) -> TopAbs:
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
    return TopAbs(
        values=a[idx],
        signed=flat[idx].to(torch.float32),
        indices=idx,
        dim_max=a2.amax(dim=0),
        token_max=a2.amax(dim=1),
    )


def top_abs_rows_torch(x: torch.Tensor, k: int) -> TopAbs:
    """`top_abs_torch` of every x[i] at once (x: [rows, ..., D]); fields gain a leading rows dim."""
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
    return TopAbs(
        values=torch.gather(a, 1, idx),
        signed=torch.gather(x.detach().reshape(rows, -1), 1, idx).to(torch.float32),
        indices=idx,
        dim_max=a3.amax(dim=1),
        token_max=a3.amax(dim=2),
    )


def top_abs_rows(x: torch.Tensor, k: int, backend: str = "auto") -> TopAbs:
    """`top_abs` of every x[i] (a batch of sequences); fields gain a leading rows dim.

    The torch path reduces all rows in one call; the Triton kernel runs once per row."""
    backend = getattr(backend, "value", backend)
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_available() else "torch"
    if backend == "torch":
        return top_abs_rows_torch(x, k)
    parts = [top_abs(x[i], k, backend=backend) for i in range(x.shape[0])]
    return TopAbs(*(torch.stack([getattr(p, f) for p in parts]) for f in ("values", "signed", "indices", "dim_max", "token_max")))


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def top_abs(x: torch.Tensor, k: int, backend: str = "auto") -> TopAbs:
    backend = getattr(backend, "value", backend)
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_available() else "torch"
    if backend == "torch":
        return top_abs_torch(x, k)
    if backend == "triton":
        from kernels.triton_topk import top_abs_triton

        return top_abs_triton(x, k)
    raise ValueError(f"unknown top-k backend {backend!r} (auto, torch, triton)")
