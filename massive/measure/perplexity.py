"""Perplexity, the paper's measure of what an intervention does to a language model.

PPL = exp(mean cross-entropy over every predicted token) of token chunks (usually
massive.core.sequences.perplexity_chunks: the corpus in order, cut into non-overlapping seq_len
chunks). One loop, `chunk_nll`, computes the mean cross-entropy of each chunk (the logits cast to
float32, the means kept in float64, so the number does not depend on the batch size beyond
float32 rounding); `perplexity` is exp of their mean (the chunks have one length). A non-finite
loss (a model run in float16 whose activations overflow, say) is a NonFiniteError naming where,
the dtype and a hint; it never becomes a number.

    >>> chunks = massive.perplexity_chunks(tok, docs, seq_len=256, max_chunks=16)
    >>> ppl = perplexity(model, chunks, batch_size=4)
    >>> ppl.value, ppl.n_tokens
    (21.3, 4080)

The per-chunk NLLs are the unit a paired bootstrap over chunks resamples: massive.compare runs
conditions (interventions, weight edits, quantization, masks) and gives each one's ratio to a
baseline with its interval and verdict.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from massive.core.errors import MassiveError, check_finite


class Perplexity(NamedTuple):
    """exp(mean cross-entropy) and the number of predicted tokens it is the mean over."""

    value: float
    n_tokens: int

    def __float__(self) -> float:
        return self.value


def _dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


@torch.inference_mode()
def chunk_nll(
    model: nn.Module,
    chunks: torch.Tensor,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    where: str = "perplexity",
) -> np.ndarray:
    """The mean cross-entropy of each of `chunks` (LongTensor [n, seq_len]) under causal LM
    `model`: float64 [n]. The chunks have one length, so exp(mean) is their perplexity. A
    non-finite loss is a NonFiniteError that starts with `where`, as for `perplexity`.

        >>> nll = chunk_nll(model, chunks, batch_size=4)
        >>> nll.shape, float(np.exp(nll.mean()))
        ((16,), 21.3)
    """
    if device is None:
        device = next(model.parameters()).device
    if chunks.dim() != 2 or chunks.shape[0] == 0 or chunks.shape[1] < 2:
        raise MassiveError(f"{where}: no token to predict (chunks of shape {tuple(chunks.shape)})")
    dtype, out = _dtype(model), []
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
        logits = model(batch.to(device), use_cache=False).logits[:, :-1].float()
        # the vocabulary as the last, contiguous dim: 2-3x faster on a CPU than cross_entropy over
        # [batch, vocab, positions], and nearer float64 (1e-6 against 5e-5 on a 49,152-token vocabulary)
        targets = batch[:, 1:].to(device)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        loss = loss.view(targets.shape).double().mean(1)
        for i, v in enumerate(loss.tolist()):
            check_finite(v, f"{where}: the cross-entropy of chunk {start + i}", dtype)
        out += loss.tolist()
    return np.asarray(out, dtype=np.float64)


def perplexity(
    model: nn.Module,
    chunks: torch.Tensor,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    where: str = "perplexity",
) -> Perplexity:
    """The perplexity of causal LM `model` on `chunks` (LongTensor [n, seq_len]), in batches of
    `batch_size`, on `device` (None: the device of the model's parameters): exp of the mean of
    `chunk_nll` (the chunks have one length). A non-finite loss is a NonFiniteError that starts
    with `where` (e.g. "ablate: intervention 'zero' at blocks 11").

        >>> with massive.intervene(model, found, "zero", tokenizer=tok):
        ...     ppl = perplexity(model, chunks, where="intervention 'zero'")
    """
    nll = chunk_nll(model, chunks, batch_size, device, where=where)
    try:
        value = math.exp(float(nll.mean()))
    except OverflowError:  # a finite but huge mean loss
        value = math.inf
    return Perplexity(check_finite(value, f"{where}: the perplexity", _dtype(model)), int(chunks[:, 1:].numel()))
