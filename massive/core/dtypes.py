"""The number formats a model loads and autocasts to, by name, without importing torch.

The names are the configs' (model.dtype, inference.formats, train.dtype); `torch_dtype` maps a
name to its torch dtype (massive.core.arch.DTYPES holds the same mapping, built from these names).

    >>> torch_dtype("bfloat16")
    torch.bfloat16
"""

from __future__ import annotations

from massive.core.errors import MassiveError

DTYPE_NAMES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str):
    """The torch dtype named `name` (one of DTYPE_NAMES)."""
    if name not in DTYPE_NAMES:
        raise MassiveError(f"unknown dtype {name!r} (known: {', '.join(DTYPE_NAMES)})")
    import torch

    return getattr(torch, name)
