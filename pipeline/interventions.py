"""Interventions on massive activations, applied by forward hooks on a block's output.

The targets at a block are found on the input itself, with the detection's rule restricted to
the dims detection found: the entries of those dims with |a| > detect.min_abs and > min_ratio x
the median |a| of the sequence at that block. Each intervention is a named function
`fn(h, mask, ctx) -> None` that edits the block output `h` [batch, seq, dim] in place at the
entries it targets; registering a new one is one decorated function.

  none         nothing (the baseline)
  zero         the massive entries set to 0
  mean         each massive entry set to the mean of its (block, dim, token role) over the
               capture's sequences (computed from the capture, never typed in); a role the
               capture never saw in that dim takes the (block, dim) mean over all roles
  random_zero  the control: as many entries as there are massive ones, drawn (seeded) among the
               ordinary entries of the same sequence, set to 0
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from pipeline.model import find_parts

ROLES = ("first", "delimiter", "other")
INTERVENTIONS: dict[str, Callable] = {}


def intervention(name: str):
    def register(fn):
        INTERVENTIONS[name] = fn
        return fn

    return register


@dataclass
class Context:
    """What an intervention may need besides the block output."""

    layer: int
    roles: torch.Tensor  # [batch, seq] index into ROLES
    means: dict[tuple[int, int, str], float] = field(default_factory=dict)  # (layer, dim, role) -> mean
    generator: torch.Generator | None = None
    changed: int = 0  # entries changed so far (for the record)


@intervention("none")
def none(h: torch.Tensor, mask: torch.Tensor, ctx: Context) -> None:
    return None


@intervention("zero")
def zero(h: torch.Tensor, mask: torch.Tensor, ctx: Context) -> None:
    h[mask] = 0
    ctx.changed += int(mask.sum())


@intervention("mean")
def mean(h: torch.Tensor, mask: torch.Tensor, ctx: Context) -> None:
    for b, t, d in mask.nonzero().tolist():
        key = (ctx.layer, d, ROLES[int(ctx.roles[b, t])])
        value = ctx.means.get(key, ctx.means.get((ctx.layer, d, "any")))
        if value is not None:
            h[b, t, d] = value
            ctx.changed += 1


@intervention("random_zero")
def random_zero(h: torch.Tensor, mask: torch.Tensor, ctx: Context) -> None:
    for b in range(h.shape[0]):
        n = int(mask[b].sum())
        if n == 0:
            continue
        ordinary = (~mask[b]).flatten().nonzero().flatten()
        pick = ordinary[torch.randperm(ordinary.numel(), generator=ctx.generator)[:n]]
        h[b].view(-1)[pick] = 0
        ctx.changed += n


def massive_mask(h: torch.Tensor, dims: list[int], min_abs: float, min_ratio: float) -> torch.Tensor:
    """Entries of `dims` with |a| > min_abs and > min_ratio x the median |a| of their sequence."""
    a = h.detach().to(torch.float32).abs()
    median = a.flatten(1).median(dim=1).values.view(-1, 1, 1)
    mask = torch.zeros_like(a, dtype=torch.bool)
    if dims:
        idx = torch.tensor(dims, device=h.device)
        sel = a[..., idx]
        mask[..., idx] = (sel > min_abs) & (sel > min_ratio * median)
    return mask


@contextmanager
def applied(model: torch.nn.Module, name: str, layers: list[int], dims: list[int], min_abs: float, min_ratio: float,
            ctx: Context, roles_of: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Apply intervention `name` at the output of each block in `layers` during forward passes.

    With `roles_of`, every forward pass first sets ctx.roles = roles_of(input_ids), so callers
    that do not control batching (an evaluation harness) still give `mean` the token roles."""
    if name not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {name!r} (known: {', '.join(sorted(INTERVENTIONS))})")
    fn = INTERVENTIONS[name]
    blocks = find_parts(model).blocks
    handles = []
    if roles_of is not None:
        def set_roles(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                ctx.roles = roles_of(ids).to(ids.device)

        handles.append(model.register_forward_pre_hook(set_roles, with_kwargs=True))
    for layer in layers:
        def hook(_module, _inputs, output, layer=layer):
            h = output[0] if isinstance(output, tuple) else output
            ctx.layer = layer
            fn(h, massive_mask(h, dims, min_abs, min_ratio), ctx)  # in place: the block's output is changed

        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield ctx
    finally:
        for handle in handles:
            handle.remove()
