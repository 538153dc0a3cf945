"""Where training runs: the device, torchrun's ranks, autocast and the gradient scaler."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch

from massive.core.arch import DTYPES


def precision(device: torch.device, dtype: str = "float32") -> tuple[Callable, "torch.amp.GradScaler | None"]:
    """(autocast context factory, gradient scaler or None) for training in `dtype` on `device`.

    Autocast only on GPUs and below float32; a GradScaler for float16. On GPUs it also allows TF32.

        >>> autocast, scaler = precision(torch.device("cpu"), "bfloat16")   # CPU: plain float32
        >>> scaler is None
        True
    """
    dt = DTYPES[dtype]
    use_amp = device.type == "cuda" and dt != torch.float32
    autocast = (lambda: torch.autocast("cuda", dtype=dt)) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and dt == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return autocast, scaler


def distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world) under torchrun (its environment variables), else (0, 0, 1)."""
    if int(os.environ.get("RANK", -1)) < 0:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def init_device(name: str = "auto", local_rank: int = 0, world: int = 1) -> torch.device:
    """The training device. Under torchrun (world > 1): start the NCCL process group and take GPU
    `local_rank`. Otherwise `name`, where "auto" is CUDA when available, else the CPU.

        >>> init_device("cpu")
        device(type='cpu')
    """
    if world > 1:
        from torch.distributed import init_process_group

        init_process_group(backend="nccl")
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
