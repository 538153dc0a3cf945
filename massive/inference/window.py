"""Windowed attention with and without the sink tokens: the StreamingLLM experiment (Xiao et al.
2024), done with 4-D attention masks inside one sequence, so no cache code is needed.

Each query at position q sees the keys k <= q with q - k < W (a sliding window of the last W
tokens, itself included) and, with S sinks, also the first S tokens (k < S). Perplexity is
measured on the same chunks as full attention. Positions stay the sequence's own (StreamingLLM
renumbers them inside its cache; with rotary embeddings only the sink's distance differs).

Then the sink version is repeated with the massive activations at the sink tokens (positions
< S) set to their mean or zeroed at the block where they emerge (massive.intervene.interventions' "mean"
and "zero", on the entries of the detected dims that the detection's rule finds at those
positions): whether the sink's value to the window comes from its massive activation.

The mask is the additive float mask transformers' eager attention uses (0 where a key is seen,
the dtype's minimum where it is hidden), shaped [batch, 1, T, T]; transformers takes a 4-D mask
as it is. Whether a model does is probed (`probe`): a family whose attention takes no 4-D mask
(it fails, or ignores it) is skipped with one line saying so.

    >>> from massive.inference import window
    >>> window.visible(6, window=2, sinks=1).int()[5]
    tensor([1, 0, 0, 0, 1, 1], dtype=torch.int32)
    >>> table = window.perplexities(model, chunks, found, windows=[64], sinks=[1, 4], roles_of=TokenRoles(tok))
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError
from massive.inference.schemes import SINK_INTERVENTIONS
from massive.intervene.comparison import COLUMNS as COMPARISON_COLUMNS
from massive.intervene.comparison import HARMFUL, HARMLESS, RESAMPLES, compare
from massive.intervene.interventions import ROLES, Context, emerge_layer, lookup, massive_mask, massive_means
from massive.measure.detect import thresholds

COLUMNS = ["variant", "window", "sinks", "sink_massive", *COMPARISON_COLUMNS, "entries_changed"]


def visible(seq_len: int, window: int, sinks: int = 0) -> torch.Tensor:
    """[T, T] bool: which keys each query sees (causal, the last `window` tokens, the first `sinks`).

    >>> visible(4, window=4).equal(torch.ones(4, 4, dtype=torch.bool).tril())
    True
    """
    if window < 1:
        raise MassiveError(f"window W={window} must be at least 1 (each token sees itself)")
    if sinks < 0:
        raise MassiveError(f"sinks S={sinks} must be >= 0")
    q = torch.arange(seq_len)[:, None]
    k = torch.arange(seq_len)[None, :]
    return (k <= q) & ((q - k < window) | (k < sinks))


def mask(seq_len: int, window: int, sinks: int = 0, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The additive 4-D mask [1, 1, T, T] of `visible` in `dtype`: 0 where seen, finfo(dtype).min where hidden.

    >>> mask(3, window=1)[0, 0]
    tensor([[ 0.0000e+00, -3.4028e+38, -3.4028e+38],
            [-3.4028e+38,  0.0000e+00, -3.4028e+38],
            [-3.4028e+38, -3.4028e+38,  0.0000e+00]])
    """
    seen = visible(seq_len, window, sinks).to(device)
    out = torch.zeros(seq_len, seq_len, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
    return out[None, None]


class Windowed(nn.Module):
    """`model` with every forward pass given the windowed 4-D mask (what massive.perplexity runs).

    >>> ppl = perplexity(Windowed(model, window=64, sinks=4), chunks)
    """

    def __init__(self, model: nn.Module, window: int, sinks: int = 0):
        super().__init__()
        self.model, self.window, self.sinks = model, window, sinks

    def forward(self, input_ids: torch.Tensor, **kwargs):
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        m = mask(input_ids.shape[1], self.window, self.sinks, dtype, input_ids.device)
        return self.model(input_ids, attention_mask=m.expand(len(input_ids), 1, -1, -1), **kwargs)


@torch.inference_mode()
def probe(model: nn.Module, ids: torch.Tensor, device=None) -> str | None:
    """None when `model` takes a 4-D attention mask, else the reason (one line): a window of 1
    must change the logits after the first token, and a window as long as the sequence must give
    full attention's logits (within float rounding: a fused kernel may take another path).

        >>> probe(model, chunks[:1, :16]) is None
        True
    """
    device = device or next(model.parameters()).device
    ids = ids[:1, : min(16, ids.shape[1])].to(device)
    name = type(model).__name__
    if ids.shape[1] < 2:
        raise MassiveError("window.probe needs at least 2 tokens")
    try:
        full = model(ids, use_cache=False).logits.float()
        same = Windowed(model, ids.shape[1])(ids, use_cache=False).logits.float()
        one = Windowed(model, 1)(ids, use_cache=False).logits.float()
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        return (
            f"{name}'s attention takes no 4-D attention mask ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        )
    if torch.allclose(one[:, 1:], full[:, 1:]):
        return f"{name}'s attention ignores a 4-D attention mask (a window of 1 token gives full attention's logits)"
    if not torch.allclose(same, full, rtol=1e-3, atol=1e-3 * float(full.abs().max())):
        return f"{name}'s attention misreads a 4-D attention mask (a window as long as the sequence changes the logits)"
    return None


@contextmanager
def at_sinks(model: nn.Module, found: Any, name: str, sinks: int, roles_of=None) -> Iterator[Context]:
    """Intervention `name` (mean | zero, massive.intervene.interventions) at the emergence block's output on
        the massive entries of the detected dims at the first `sinks` positions only (the detection's
        rule: massive_mask with its thresholds). `roles_of` (TokenRoles(tok)) gives "mean" each token's
    role; without it position 0 is "first" and the others "other". Yields the Context (ctx.changed).

            >>> with at_sinks(model, found, "zero", sinks=1) as ctx:
            ...     ppl = perplexity(Windowed(model, 64, 1), chunks)
    """
    if name not in SINK_INTERVENTIONS:
        raise MassiveError(f"unknown sink intervention {name!r} (known: {', '.join(SINK_INTERVENTIONS)})")
    fn = lookup(name)
    layer = emerge_layer(found)
    dims = sorted(int(d) for d in found.summary["dim"].unique()) if len(found.summary) else []
    min_abs, min_ratio = thresholds(found)
    ctx = Context(means=massive_means(found.massive))

    def tokens(x: torch.Tensor, _hook: str) -> None:
        if roles_of is not None:
            ctx.roles = roles_of(x.cpu()).to(x.device)
        else:
            ctx.roles = torch.full(x.shape, ROLES.index("other"), dtype=torch.long, device=x.device)
            ctx.roles[:, 0] = ROLES.index("first")

    def edit(h: torch.Tensor, hook: str) -> None:
        ctx.layer = hooks.layer_of(hook)
        m = massive_mask(h, dims, min_abs, min_ratio)
        m[:, sinks:] = False
        fn(h, m, ctx)

    fns = [("hook_tokens", tokens)] + ([(hooks.resid_post(layer), edit)] if layer is not None and dims else [])
    with hooks.hooked(model, fns):
        yield ctx


def perplexities(
    model: nn.Module,
    chunks: torch.Tensor,
    found: Any,
    windows: Sequence[int],
    sinks: Sequence[int] = (1, 4),
    interventions: Sequence[str] = SINK_INTERVENTIONS,
    roles_of=None,
    batch_size: int = 4,
    device=None,
    full: np.ndarray | None = None,
    resamples: int = RESAMPLES,
    seed: int = 1,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
    where: str = "window",
) -> pd.DataFrame:
    """Perplexity of `chunks` with full attention (`full`: its per-chunk NLL, when already
    measured), then for each W of `windows`: the window alone, the window + S sinks for each S of
    `sinks`, and those with the sinks' massive activations under each of `interventions`, each
    compared with full attention by massive.compare (COLUMNS: ratio, its paired-bootstrap
    interval over the chunks, verdict). Call `probe` first: a model that takes no 4-D mask gives
    wrong numbers.

        >>> t = perplexities(model, chunks, found, windows=[64], sinks=[1, 4], roles_of=TokenRoles(tok))
        >>> t[["variant", "window", "sinks", "sink_massive", "perplexity", "ratio", "verdict"]]
    """
    for name in interventions:
        if name not in SINK_INTERVENTIONS:
            raise MassiveError(f"unknown sink intervention {name!r} (known: {', '.join(SINK_INTERVENTIONS)})")
    for w in windows:
        visible(1, int(w))
    for s in sinks:
        if int(s) < 1:
            raise MassiveError(f"sinks S={s} must be at least 1 (S=0 is the window alone, always measured)")
    limit = arch.max_positions(model.config)
    if limit is not None and chunks.shape[1] > limit:
        raise MassiveError(f"seq_len={chunks.shape[1]} is above the model's maximum positions ({limit})")
    cases = {"full attention": (None, 0, "as is")}
    for w in windows:
        for s, m in [(0, "as is")] + [(int(s), m) for s in sinks for m in ["as is", *interventions]]:
            cases[f"W={int(w)}, S={s}, sink massive {m}"] = (int(w), s, m)
    contexts: dict[str, Context] = {}

    def condition(name: str):
        w, s, m = cases[name]

        @contextmanager
        def applied():
            with at_sinks(model, found, m, s, roles_of) if m != "as is" else nullcontext(Context()) as c:
                contexts[name] = c
                yield Windowed(model, w, s)

        return applied

    base = "full attention"
    conditions = {name: (condition(name) if name != base else None) for name in cases}
    cmp = compare(
        model,
        chunks,
        conditions,
        baseline=base,
        resamples=resamples,
        seed=seed,
        harmful_factor=harmful_factor,
        harmless_factor=harmless_factor,
        batch_size=batch_size,
        device=device,
        known={base: full} if full is not None else None,
        where=f"{where}: window",
    )
    rows = []
    for name, (w, s, m) in cases.items():
        variant = (
            "full attention"
            if w is None
            else "window"
            if s == 0
            else "window + sinks"
            if m == "as is"
            else f"window + sinks, sink massive {m}"
        )
        rows.append(
            {
                "variant": variant,
                "window": w,
                "sinks": s,
                "sink_massive": m,
                **cmp.row(name),
                "entries_changed": contexts[name].changed if name in contexts else 0,
            }
        )
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["window"] = out["window"].astype("Int64")
    return out
