"""Fake (simulated) quantization of activations and weights, and what it costs in perplexity.

Symmetric integer quantization with round-to-nearest, q = clamp(round(x / s), -Q, Q) * s with
Q = 2^(bits-1) - 1 (127 for int8, 7 for int4) and s = max |x| / Q over a group, by
torch.fake_quantize_per_channel_affine (each group a "channel"). The groups:

  per_tensor   activations: one scale per sequence's input tensor [tokens, width] (the tensor a
               one-sequence forward pass gives the layer, so a number does not depend on the
               batch size)
  per_token    activations: one scale per token (a row of the input)
  per_channel  weights: one scale per output channel (a row of nn.Linear's [out, in] weight, a
               column of GPT-2's Conv1D [in, out])

Entries marked `keep` are left in float and left out of the scale: for activations, the massive
activations detection found (the LLM.int8() mixed-precision decomposition, Dettmers et al.
2022, restricted to what detection found): at every block, the entries of the detected dims
that are massive in the block's input residual stream (massive.intervene.interventions.massive_mask, the
detection's rule), kept at the same (token, dim) in the inputs of the linear layers that read
that stream (after its norm: q/k/v, gate/up, fc1, c_attn, c_fc, the router); for weights, the
super weight(s) massive.measure.origins finds (Yu et al. 2024).

Activations are quantised at the input of every linear layer of the blocks (the hook points
blocks.L.<path>.hook_in of massive.core.hooks); weights are replaced, for the duration of a `with`
block, by their quantised copy and restored bit for bit on exit. The schemes are registered by
name (SCHEMES): a8_per_tensor, a8_per_token, a8_per_tensor_keep_massive, the same with a4, and
w8_per_channel, w8_per_channel_keep_super, the same with w4.

    >>> from massive.inference import quantize
    >>> quantize.fake_quant(torch.tensor([[0.5, -1.0, 100.0]]), 8, "per_token")
    tensor([[  0.3937,  -0.7874, 100.0000]])
    >>> table = quantize.perplexities(model, chunks, ["a8_per_tensor", "w4_per_channel"], found, roles_of=TokenRoles(tok))
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError
from massive.inference.schemes import GRANULARITIES, SCHEMES, Scheme
from massive.intervene.comparison import COLUMNS as COMPARISON_COLUMNS
from massive.intervene.comparison import HARMFUL, HARMLESS, RESAMPLES, compare
from massive.intervene.interventions import emerge_layer, intervene, massive_mask
from massive.measure import origins
from massive.measure.detect import MIN_ABS, MIN_RATIO, thresholds


def scheme(name: str) -> Scheme:
    """The registered scheme `name`; an unknown name is a MassiveError listing the known ones."""
    if name not in SCHEMES:
        raise MassiveError(f"unknown quantization scheme {name!r} (known: {', '.join(SCHEMES)})")
    return SCHEMES[name]


def qmax(bits: int) -> int:
    """The largest level of a symmetric signed integer of `bits` bits: 127 (int8), 7 (int4)."""
    if bits < 2:
        raise MassiveError(f"bits={bits}: a symmetric integer needs at least 2 bits")
    return 2 ** (bits - 1) - 1


def fake_quant_groups(x: torch.Tensor, bits: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Fake-quantise a 2-D tensor [groups, n], one scale per row (max |x| of the row's entries not
    kept, / qmax), in float32; `keep` entries (bool, same shape) come back unchanged.

        >>> fake_quant_groups(torch.tensor([[1.0, 0.3], [2.0, -2.0]]), 4)
        tensor([[ 1.0000,  0.2857],
                [ 2.0000, -2.0000]])
    """
    x = x.to(torch.float32)
    a = x.abs() if keep is None else x.abs().masked_fill(keep, 0.0)
    q = qmax(bits)
    scale = (a.amax(dim=1) / q).clamp_min(torch.finfo(torch.float32).tiny)
    out = torch.fake_quantize_per_channel_affine(
        x, scale, torch.zeros(len(x), dtype=torch.int32, device=x.device), 0, -q, q
    )
    return out if keep is None else torch.where(keep, x, out)


def fake_quant(
    x: torch.Tensor, bits: int, granularity: str, keep: torch.Tensor | None = None, batch: int | None = None
) -> torch.Tensor:
    """Fake-quantise `x` [..., width] (computed in float32, returned in x's dtype) with one scale
    per token (rows of the last dim), per sequence's tensor ("per_tensor": `batch` sequences, the
    first dim by default) or per output channel of a weight ("per_channel": rows of a 2-D [out, in]);
    `keep` (bool like x): entries left in float and out of the scale.

        >>> fake_quant(torch.tensor([[[0.5, -1.0], [3.0, 0.1]]]), 8, "per_tensor")
        tensor([[[ 0.4961, -0.9921],
                 [ 3.0000,  0.0945]]])
    """
    if granularity == "per_token":
        groups = x.reshape(-1, x.shape[-1])
    elif granularity == "per_tensor":
        groups = x.reshape(batch or x.shape[0], -1)
    elif granularity == "per_channel":
        groups = x.reshape(x.shape[0], -1)
    else:
        raise MassiveError(f"unknown granularity {granularity!r} (known: {', '.join(GRANULARITIES)})")
    k = None if keep is None else keep.reshape(groups.shape)
    return fake_quant_groups(groups, bits, k).reshape(x.shape).to(x.dtype)


# ---------------------------------------------------------------- activations
@dataclass
class Stats:
    """What a quantised run did: tensors quantised, entries kept in float, and the relative error
    sqrt(sum |q - x|^2 / sum |x|^2) over every quantised tensor (`rel_error`)."""

    tensors: int = 0
    kept: int = 0
    err2: float = 0.0
    norm2: float = 0.0

    @property
    def rel_error(self) -> float:
        return (self.err2 / self.norm2) ** 0.5 if self.norm2 > 0 else 0.0

    def add(self, x: torch.Tensor, q: torch.Tensor, kept: int = 0) -> None:
        x32 = x.detach().to(torch.float32)
        self.tensors += 1
        self.kept += kept
        self.err2 += float((q.detach().to(torch.float32) - x32).pow(2).sum())
        self.norm2 += float(x32.pow(2).sum())


@contextmanager
def activations(
    model: nn.Module, s: Scheme, dims: Sequence[int] = (), min_abs: float = MIN_ABS, min_ratio: float = MIN_RATIO
) -> Iterator[Stats]:
    """Fake-quantise the input of every linear layer of the blocks with scheme `s` (an activation
    scheme) during the forward passes of the block; with s.keep, the massive entries of `dims`
    (the detection's rule at each block's input residual stream) stay in float in the linear
    inputs that read that stream. Yields the Stats.

        >>> with activations(model, scheme("a8_per_tensor_keep_massive"), dims=[507]) as st:
        ...     model(ids)
        >>> st.kept, st.rel_error
    """
    if s.target != "activation":
        raise MassiveError(f"{s.name} is a {s.target} scheme, not an activation scheme")
    parts = arch.find_parts(model)
    d_model = arch.hidden_size(model.config)
    stats, state = Stats(), {"batch": None, "mask": {}, "reads": {}}
    fns: list[tuple[str, hooks.HookFn]] = [("hook_tokens", lambda x, _n: state.update(batch=len(x), mask={}, reads={}))]
    if s.keep and dims:

        def residual(h: torch.Tensor, name: str) -> None:
            state["mask"][hooks.layer_of(name)] = massive_mask(h, list(dims), min_abs, min_ratio)

        def reads(x: torch.Tensor, name: str) -> None:
            state["reads"].setdefault(hooks.layer_of(name), set()).add(x.data_ptr())

        fns += [(hooks.resid_pre(L), residual) for L in range(len(parts.blocks))]
        fns += [(hooks.attn_in(L), reads) for L in range(len(parts.blocks))]
        fns += [(hooks.mlp_in(L), reads) for L in range(len(parts.blocks)) if parts.mlps[L] is not None]

    def quantise(x: torch.Tensor, name: str) -> torch.Tensor:
        layer = hooks.layer_of(name)
        keep = None
        mask = state["mask"].get(layer)
        if mask is not None and x.shape[-1] == d_model and x.data_ptr() in state["reads"].get(layer, ()):
            keep = mask.reshape(x.shape)
        q = fake_quant(x, s.bits, s.granularity, keep, batch=state["batch"])
        stats.add(x, q, int(keep.sum()) if keep is not None else 0)
        return q

    fns += [
        (hooks.linear_in(L, path), quantise)
        for L, block in enumerate(parts.blocks)
        for path, _, _ in arch.linears(block)
    ]
    with hooks.hooked(model, fns):
        yield stats


# ---------------------------------------------------------------- weights
Keep = dict[str, list[tuple[int, ...]]]  # parameter name -> indices (in the weight's own orientation) kept in float


def superweight_keep(primary: pd.DataFrame) -> Keep:
    """The super weights of massive.measure.origins (Origins.primary: param, coordinate) as a Keep.

    >>> superweight_keep(o.primary)
    {'model.layers.11.mlp.down_proj.weight': [(507, 1229), (247, 1229)]}
    """
    out: Keep = {}
    for _, r in primary.iterrows():
        out.setdefault(str(r["param"]), []).append(tuple(int(i) for i in json.loads(r["coordinate"])))
    return out


def superweights(
    model: nn.Module,
    ids: torch.Tensor,
    found: Any,
    seq_ids: Sequence[int] | None = None,
    batch_size: int = 4,
    device=None,
) -> Keep:
    """The super weights behind the massive activations of `found`, traced on `ids` (the captured
    sequences) by massive.measure.origins.find, as a Keep; none found (or no massive activation): {}.

        >>> superweights(model, ids, found)
        {'model.layers.11.mlp.down_proj.weight': [(507, 1229), (247, 1229)]}
    """
    if not len(found.summary):
        return {}
    return superweight_keep(
        origins.find(model, ids, found, seq_ids=seq_ids, batch_size=batch_size, device=device).primary
    )


def quantised_weight(
    w: torch.Tensor, bits: int, orientation: str, keep: Sequence[tuple[int, ...]] = ()
) -> torch.Tensor:
    """Round-to-nearest per output channel of a linear weight ("out_in": [out, in], rows;
    "in_out": GPT-2's Conv1D [in, out], columns), with the `keep` entries left as they are (and out
    of their channel's scale). Returned in w's dtype.

        >>> quantised_weight(torch.tensor([[1.0, 0.3], [2.0, -2.0]]), 4, "out_in")
        tensor([[ 1.0000,  0.2857],
                [ 2.0000, -2.0000]])
    """
    m = w.detach() if orientation == "out_in" else w.detach().t()
    mask = None
    if keep:
        mask = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
        for idx in keep:
            mask[idx] = True
        mask = mask if orientation == "out_in" else mask.t()
    q = fake_quant(m, bits, "per_channel", mask)
    return (q if orientation == "out_in" else q.t()).to(w.dtype)


@contextmanager
def weights(model: nn.Module, s: Scheme, keep: Keep | None = None) -> Iterator[Stats]:
    """Every linear weight of the blocks replaced by its round-to-nearest quantised copy (scheme
    `s`, a weight scheme) for the duration of the block, restored bit for bit on exit (exception
    or not); with s.keep, the `keep` entries (super weights) stay in float. Yields the Stats.

        >>> with weights(model, scheme("w4_per_channel_keep_super"), superweight_keep(o.primary)) as st:
        ...     ppl = perplexity(model, chunks)
    """
    if s.target != "weight":
        raise MassiveError(f"{s.name} is a {s.target} scheme, not a weight scheme")
    names = {id(p): n for n, p in model.named_parameters()}
    keep = keep or {}
    stats, saved = Stats(), []
    try:
        with torch.no_grad():
            for block in arch.find_parts(model).blocks:
                for _, mod, orientation in arch.linears(block):
                    w = mod.weight
                    kept = keep.get(names.get(id(w), ""), []) if s.keep else []
                    q = quantised_weight(w, s.bits, orientation, kept)
                    stats.add(w, q, len(kept))
                    saved.append((w, w.data.clone()))
                    w.data.copy_(q)
        yield stats
    finally:
        with torch.no_grad():
            for w, old in reversed(saved):
                w.data.copy_(old)


# ---------------------------------------------------------------- perplexity under each scheme
COLUMNS = [
    "scheme",
    "label",
    "kind",
    "bits",
    "granularity",
    "keep",
    "massive",
    *COMPARISON_COLUMNS,
    "rel_error",
    "tensors",
    "kept",
    "note",
]


def applied(model: nn.Module, s: Scheme, dims: Sequence[int], min_abs: float, min_ratio: float, keep: Keep | None):
    """The context manager of scheme `s` (activations or weights)."""
    if s.target == "activation":
        return activations(model, s, dims, min_abs, min_ratio)
    return weights(model, s, keep)


def perplexities(
    model: nn.Module,
    chunks: torch.Tensor,
    names: Sequence[str],
    found: Any,
    roles_of=None,
    keep: Keep | None = None,
    with_mean: bool = True,
    batch_size: int = 4,
    device=None,
    baseline: np.ndarray | None = None,
    resamples: int = RESAMPLES,
    seed: int = 1,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
    where: str = "quantize",
) -> pd.DataFrame:
    """Perplexity of `chunks` in float and under each scheme of `names` (COLUMNS; massive: "as is",
    and, with `with_mean`, "mean": the massive activations set to their mean at the emergence
    block first, massive.intervene.interventions' "mean", which needs `roles_of`), each compared with the
    float model as is by massive.compare (ratio, its paired-bootstrap interval over the chunks,
    verdict); the detected dims and thresholds of `found` (a massive.detect result) give the kept
    entries, `keep` the super weights; `baseline`: the float model's per-chunk NLL, when already
    measured. A scheme whose loss is not finite is a row with perplexity None and the reason.

        >>> t = perplexities(model, chunks, ["a8_per_tensor", "a8_per_tensor_keep_massive"], found, TokenRoles(tok))
        >>> t.pivot(index="scheme", columns="massive", values="perplexity")
    """
    schemes = [scheme(n) for n in names]  # an unknown name fails before any pass
    dims = sorted(int(d) for d in found.summary["dim"].unique()) if len(found.summary) else []
    min_abs, min_ratio = thresholds(found)
    arms = ["as is"] + (["mean"] if with_mean and emerge_layer(found) is not None else [])
    cases = {f"{s.name if s else 'float'} ({massive})": (s, massive) for massive in arms for s in [None, *schemes]}

    def condition(s: Scheme | None, massive: str):
        @contextmanager
        def applied_():
            mean = (
                intervene(model, found, "mean", layers="emerge", roles_of=roles_of)
                if massive == "mean"
                else nullcontext()
            )
            ctx = applied(model, s, dims, min_abs, min_ratio, keep) if s is not None else nullcontext(Stats())
            with mean, ctx as st:
                yield st

        return applied_

    base = "float (as is)"
    cmp = compare(
        model,
        chunks,
        {name: condition(*case) for name, case in cases.items()},
        baseline=base,
        resamples=resamples,
        seed=seed,
        harmful_factor=harmful_factor,
        harmless_factor=harmless_factor,
        batch_size=batch_size,
        device=device,
        known={base: baseline} if baseline is not None else None,
        tolerate=lambda name: cases[name][0] is not None,
        where=f"{where}: scheme",
    )
    rows = []
    for name, (s, massive) in cases.items():
        st = cmp.contexts.get(name, Stats())
        rows.append(
            {
                "scheme": s.name if s else "float",
                "label": s.label if s else "float (no quantization)",
                "kind": s.target if s else "float",
                "bits": s.bits if s else None,
                "granularity": s.granularity if s else None,
                "keep": s.keep if s else False,
                "massive": massive,
                **cmp.row(name),
                "rel_error": st.rel_error,
                "tensors": st.tensors,
                "kept": st.kept,
            }
        )
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["bits"] = out["bits"].astype("Int64")
    return out
