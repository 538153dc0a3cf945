"""What every top-k backend returns, and the argument checks they share (kernels/topk.py: torch,
kernels/triton_topk.py: Triton)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TopAbs:
    values: torch.Tensor
    signed: torch.Tensor
    indices: torch.Tensor
    dim_max: torch.Tensor
    token_max: torch.Tensor


def check_args(x: torch.Tensor, k: int) -> None:
    if x.dim() == 0:
        raise ValueError("top_abs needs a tensor with a feature dim, got a scalar")
    if x.numel() == 0:
        raise ValueError("top_abs got an empty tensor")
    if not 1 <= k <= x.numel():
        raise ValueError(f"k={k} must be between 1 and the number of elements ({x.numel()})")
