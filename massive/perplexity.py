"""Perplexity, the paper's measure of what an intervention does to a language model.

PPL = exp(mean cross-entropy over every predicted token) of token chunks (usually
massive.sequences.perplexity_chunks: the corpus in order, cut into non-overlapping seq_len
chunks). The logits are cast to float32 for the cross-entropy and the sum is kept in float64, so
the number does not depend on the batch size beyond float32 rounding. A non-finite loss (a model
run in float16 whose activations overflow, say) is a NonFiniteError naming where, the dtype and
a hint; it never becomes a number.

    >>> chunks = massive.perplexity_chunks(tok, docs, seq_len=256, max_chunks=16)
    >>> ppl = perplexity(model, chunks, batch_size=4)
    >>> ppl.value, ppl.n_tokens
    (21.3, 4080)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from massive.errors import MassiveError, check_finite


class Perplexity(NamedTuple):
    """exp(mean cross-entropy) and the number of predicted tokens it is the mean over."""

    value: float
    n_tokens: int

    def __float__(self) -> float:
        return self.value


def _dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


@torch.inference_mode()
def perplexity(model: nn.Module, chunks: torch.Tensor, batch_size: int = 4, device: torch.device | str | None = None,
               where: str = "perplexity") -> Perplexity:
    """The perplexity of causal LM `model` on `chunks` (LongTensor [n, seq_len]), in batches of
    `batch_size`, on `device` (None: the device of the model's parameters). A non-finite loss is
    a NonFiniteError that starts with `where` (e.g. "ablate: intervention 'zero' at blocks 11").

        >>> with massive.intervene(model, found, "zero", tokenizer=tok):
        ...     ppl = perplexity(model, chunks, where="intervention 'zero'")
    """
    if device is None:
        device = next(model.parameters()).device
    dtype = _dtype(model)
    nll, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
        logits = model(batch.to(device), use_cache=False).logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1).to(device), reduction="sum")
        check_finite(loss.item(), f"{where}: the cross-entropy of chunks {start}..{start + len(batch) - 1}", dtype)
        nll += loss.item()
        count += batch[:, 1:].numel()
    if count == 0:
        raise MassiveError(f"{where}: no token to predict (chunks of shape {tuple(chunks.shape)})")
    try:
        value = math.exp(nll / count)
    except OverflowError:  # a finite but huge mean loss
        value = math.inf
    return Perplexity(check_finite(value, f"{where}: the perplexity", dtype), count)
