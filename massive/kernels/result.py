"""What every top-k backend returns, and the argument checks they share (massive/kernels/topk.py: torch,
massive/kernels/triton_topk.py: Triton)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class TopAbs:
    """values, signed, indices [k]; dim_max [D]; token_max [N]; and the exact counts:
    counts [C] int64 (entries with |a| > count_above[c]) and dim_counts [C', D] int64 (per feature
    dim, entries with |a| > dim_count_above[c]); empty when no threshold was given."""

    values: torch.Tensor
    signed: torch.Tensor
    indices: torch.Tensor
    dim_max: torch.Tensor
    token_max: torch.Tensor
    counts: torch.Tensor | None = None
    dim_counts: torch.Tensor | None = None


def thresholds(values: Sequence[float] | torch.Tensor | None, device, check: bool = True) -> torch.Tensor:
    """Count thresholds as a float32 tensor (the precision |a| is compared in); NaN is an error
    (`check=False`: not looked at, so that no value goes to the host: the caller vouches for them)."""
    t = torch.as_tensor([] if values is None else values, dtype=torch.float32, device=device)
    if check and bool(torch.isnan(t).any()):
        raise ValueError("a count threshold is NaN")
    return t


def check_args(x: torch.Tensor, k: int) -> None:
    if x.dim() == 0:
        raise ValueError("top_abs needs a tensor with a feature dim, got a scalar")
    if x.numel() == 0:
        raise ValueError("top_abs got an empty tensor")
    if not 1 <= k <= x.numel():
        raise ValueError(f"k={k} must be between 1 and the number of elements ({x.numel()})")
