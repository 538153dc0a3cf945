"""The causal test: perplexity with the massive tokens' part of each attention output replaced by its
calibrated mean (and the controls), through massive.compare."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import pandas as pd
import torch

from massive.core import arch, hooks
from massive.core.errors import MassiveError
from massive.intervene.comparison import HARMFUL, HARMLESS, RESAMPLES, compare
from massive.intervene.interventions import massive_mask
from massive.measure.attention.analysis import AttentionResult
from massive.measure.attention.recorder import device_of, use_recording_attention
from massive.measure.attention.tokens import at

# perplexity variant -> recorder mode
VARIANTS = {
    "none": "off",
    "massive_mean": "replace_massive_with_mean",
    "random_mean": "replace_random_with_mean",
    "other_mean": "replace_other_with_mean",
    "massive_zero": "replace_massive_with_zero",
}


@contextmanager
def following(model: torch.nn.Module, chunks: torch.Tensor, on_batch: Callable[[int, int], None]):
    """Call on_batch(start, n) before each forward pass of `model` over chunks[start : start + n],
    the chunks being passed in order (as massive.perplexity does); any other input is an error.

        >>> with following(model, chunks, lambda start, n: print(start, n)):
        ...     perplexity(model, chunks, batch_size=2)
    """
    at_ = {"start": 0}

    def see(ids: torch.Tensor, _name: str) -> None:
        start, n = at_["start"], len(ids)
        if not torch.equal(ids.cpu(), chunks[start : start + n]):
            raise RuntimeError(f"forward pass over an unexpected batch (expected chunks {start}..{start + n - 1})")
        on_batch(start, n)
        at_["start"] += n

    with hooks.hooked(model, {"hook_tokens": see}):
        yield


@contextmanager
def finding_tokens(model: torch.nn.Module, chunks: torch.Tensor, dims: list[int], min_abs: float, min_ratio: float):
    """While the block runs `model` over `chunks` in order (the baseline perplexity pass), find the
    chunks' massive tokens: yields a [chunks, seq] bool tensor, filled in as the passes go, True
    where a detected dim is massive (massive_mask) in any block's output. No dims: the first token
    stands in.

        >>> with finding_tokens(model, chunks, dims=[7], min_abs=100, min_ratio=1000) as found:
        ...     perplexity(model, chunks, batch_size=4)
    """
    found = torch.zeros(chunks.shape, dtype=torch.bool)
    batch = {"start": 0, "n": 0}

    def see(h: torch.Tensor, _name: str) -> None:
        found[batch["start"] : batch["start"] + batch["n"]] |= massive_mask(h, dims, min_abs, min_ratio).any(-1).cpu()

    blocks = [(hooks.resid_post(layer), see) for layer in range(arch.num_layers(model.config))] if dims else []
    if not dims:
        found[:, 0] = True  # nothing detected: the first token stands in
    with following(model, chunks, lambda start, n: batch.update(start=start, n=n)), hooks.hooked(model, blocks):
        yield found


def intervened_layers(n_layers: int, emerge: int | None, which: str | Iterable[int] = "massive") -> list[int]:
    """The layers the interventions act on: "massive" (those whose input holds massive
    activations: after block `emerge`; all when none emerge), "all", or a list of layers.

        >>> intervened_layers(4, emerge=1)
        [2, 3]
    """
    if isinstance(which, str):
        if which not in ("massive", "all"):
            raise MassiveError(f"intervene_layers={which!r} is not 'massive', 'all' or a list of layers")
        return list(range(n_layers)) if which == "all" or emerge is None else list(range(emerge + 1, n_layers))
    layers = sorted(set(int(x) for x in which))
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise MassiveError(f"intervene_layers: layer {bad[0]} is outside 0..{n_layers - 1}")
    return layers


def intervention_perplexities(
    model: torch.nn.Module,
    chunks: torch.Tensor,
    result: AttentionResult,
    dims: list[int],
    min_abs: float,
    min_ratio: float,
    intervene_layers: str | Iterable[int] = "massive",
    batch_size: int = 8,
    device: torch.device | str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 1,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
) -> pd.DataFrame:
    """The causal test: perplexity of `chunks` [n, seq_len] with each variant (none, massive_mean,
    random_mean, other_mean, massive_zero) at the intervened layers, using the calibrated means of
    `result` (seq_len at most the calibration length), each compared with none by massive.compare
    (paired bootstrap over the chunks). The chunks' massive tokens are found on the detected
    `dims` with the detection thresholds, during the baseline pass. Columns: variant,
    massive.intervene.comparison.COLUMNS (perplexity, ratio to none, its interval, verdict, ...),
    intervened_layers. A non-finite perplexity is a NonFiniteError.

        >>> ppl = intervention_perplexities(model, chunks, res, dims=[7], min_abs=100, min_ratio=1000)
        >>> dict(zip(ppl.variant, ppl.ratio))["massive_mean"]   # ~1: the mean is enough
    """
    rec = result.recorder
    calibrated = next(iter(rec.means.values())).shape[1] if rec.means else 0
    if chunks.shape[1] > calibrated:
        raise MassiveError(f"seq_len={chunks.shape[1]} is longer than the calibration sequences ({calibrated} tokens)")
    limit = arch.max_positions(model.config)
    if limit is not None and chunks.shape[1] > limit:
        raise MassiveError(f"seq_len={chunks.shape[1]} is above the model's maximum positions ({limit})")
    use_recording_attention(model)
    device = device or device_of(model)
    rec.layers = set(intervened_layers(rec.n_layers, result.emerge, intervene_layers))
    tokens: dict[str, torch.Tensor] = {}

    @contextmanager
    def baseline():
        with finding_tokens(model, chunks, dims, min_abs, min_ratio) as found:
            yield
        tokens["massive"] = found
        tokens["random"] = at(
            torch.tensor(result.random_positions, dtype=torch.long), len(chunks), chunks.shape[1], found
        )

    def on_batch(start: int, n: int) -> None:
        rec.massive = tokens["massive"][start : start + n].to(device)
        rec.random = tokens["random"][start : start + n].to(device)

    def variant(mode: str):
        @contextmanager
        def applied():
            with rec.active(mode), following(model, chunks, on_batch):
                yield

        return applied

    conditions = {name: baseline if name == "none" else variant(mode) for name, mode in VARIANTS.items()}
    cmp = compare(
        model,
        chunks,
        conditions,
        baseline="none",
        resamples=resamples,
        seed=seed,
        harmful_factor=harmful_factor,
        harmless_factor=harmless_factor,
        batch_size=batch_size,
        device=device,
        where="attention: variant",
    )
    table = cmp.table.drop(columns="note").rename(columns={"condition": "variant"})
    table["intervened_layers"] = ",".join(map(str, sorted(rec.layers)))
    return table


def perplexity_summary(table: pd.DataFrame) -> dict:
    """{"perplexity": variant -> perplexity, "perplexity_ratio": variant -> ratio to none}.

    >>> perplexity_summary(ppl)["perplexity_ratio"]["none"]
    1.0
    """
    return {
        "perplexity": dict(zip(table["variant"], table["perplexity"])),
        "perplexity_ratio": dict(zip(table["variant"], table["ratio"])),
    }
