"""Which tokens are massive: the calibration sequences' massive-activation positions from detection,
and the random ordinary tokens of the control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from massive.core.errors import MassiveError


def calibration_tokens(massive: pd.DataFrame, seq_ids: list[int], seq_len: int) -> torch.Tensor:
    """[sequences, seq_len] bool: where detection (its `massive` table: seq_id, position, ...)
    found a massive activation in any block. Nothing detected: the first token stands in.

        >>> calibration_tokens(pd.DataFrame({"seq_id": [0], "position": [0]}), [0, 1], 4).int()
        tensor([[1, 0, 0, 0],
                [0, 0, 0, 0]], dtype=torch.int32)
    """
    mask = torch.zeros(len(seq_ids), seq_len, dtype=torch.bool)
    if massive.empty:
        mask[:, 0] = True  # nothing detected: the first token stands in
        return mask
    where = massive.groupby("seq_id")["position"].unique()
    for i, s in enumerate(seq_ids):
        if s in where.index:
            mask[i, torch.as_tensor(where[s].astype(np.int64))] = True
    return mask


def random_tokens(massive: torch.Tensor, seed: int) -> torch.Tensor:
    """Control positions: as many as the massive tokens per sequence (on average, at least one),
    drawn once (seeded) in the first half among positions massive in no calibration sequence.

        >>> random_tokens(torch.eye(1, 32, dtype=torch.bool), seed=1)   # one position in 1..15
    """
    t = massive.shape[1]
    k = max(1, round(massive.sum(1).float().mean().item()))
    pool = [p for p in range(1, max(2, t // 2)) if not massive[:, p].any()]
    if not pool:
        raise MassiveError(
            f"no position for the random control: every position 1..{max(2, t // 2) - 1} of the "
            f"{t}-token calibration sequences is massive in one of them (use longer sequences)"
        )
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist()), dtype=torch.long)


def at(positions: torch.Tensor, n: int, t: int, exclude: torch.Tensor) -> torch.Tensor:
    """[n, t] bool: `positions` (those < t) in every row, except where `exclude` is True.

    >>> at(torch.tensor([1, 9]), 2, 4, torch.zeros(2, 4, dtype=torch.bool)).int()
    tensor([[0, 1, 0, 0],
            [0, 1, 0, 0]], dtype=torch.int32)
    """
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[:, positions[positions < t]] = True
    return mask & ~exclude
