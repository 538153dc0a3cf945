"""Interventions on massive activations, applied by forward hooks on a block's output (or, for
the ones marked `before_blocks`, by forward pre-hooks on the input of every block).

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
  fix_register_mean
               (vision transformers with registers; before every block) every register token's
               whole vector replaced by its mean at that block's input over calibration images
               (ctx.register_means, from `position_means`): the paper's test that registers act
               as fixed biases
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from pipeline.model import find_parts

ROLES = ("first", "delimiter", "other", "cls", "register", "patch")  # text roles, then vision roles
INTERVENTIONS: dict[str, Callable] = {}
BEFORE_BLOCKS: set[str] = set()  # applied at the input of every block, with a [batch, seq] mask of positions


def intervention(name: str, before_blocks: bool = False):
    def register(fn):
        INTERVENTIONS[name] = fn
        if before_blocks:
            BEFORE_BLOCKS.add(name)
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
    register_means: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> [registers, dim] at its input


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


@intervention("fix_register_mean", before_blocks=True)
def fix_register_mean(h: torch.Tensor, positions: torch.Tensor, ctx: Context) -> None:
    pos = positions[0].nonzero().flatten()  # the layout is the same for every image
    if pos.numel() == 0:
        return
    if ctx.layer not in ctx.register_means:
        raise ValueError(f"fix_register_mean: no register mean for block {ctx.layer} (calibrate with position_means)")
    h[:, pos] = ctx.register_means[ctx.layer].to(device=h.device, dtype=h.dtype)
    ctx.changed += h.shape[0] * pos.numel() * h.shape[-1]


def block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.inference_mode()
def position_means(model: torch.nn.Module, batches, forward: Callable, positions: list[int]) -> dict[int, torch.Tensor]:
    """The mean vector, at the input of every block, of each of `positions` over all inputs of
    `batches` (run by `forward(batch)`), in float32: block -> [len(positions), dim]."""
    sums: dict[int, torch.Tensor] = {}
    count = 0
    handles = []
    for layer, block in enumerate(find_parts(model).blocks):
        def pre(_module, args, kwargs, layer=layer):
            h = block_input(args, kwargs)[:, positions].to(torch.float32).sum(0)
            sums[layer] = h if layer not in sums else sums[layer] + h

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        for batch in batches:
            forward(batch)
            count += len(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: s.cpu() / count for layer, s in sums.items()}


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
    """Apply intervention `name` at the output of each block in `layers` during forward passes
    (a `before_blocks` one: at the input of every block, on the positions of role "register").

    With `roles_of`, every forward pass first sets ctx.roles = roles_of(inputs) (input_ids, or
    pixel_values for a vision model), so callers that do not control batching (an evaluation
    harness) still give `mean` the token roles."""
    if name not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {name!r} (known: {', '.join(sorted(INTERVENTIONS))})")
    fn = INTERVENTIONS[name]
    blocks = find_parts(model).blocks
    handles = []
    if roles_of is not None:
        def set_roles(_module, args, kwargs):
            ids = kwargs.get("input_ids", kwargs.get("pixel_values", args[0] if args else None))
            if ids is not None:
                ctx.roles = roles_of(ids).to(ids.device)

        handles.append(model.register_forward_pre_hook(set_roles, with_kwargs=True))
    if name in BEFORE_BLOCKS:
        register = ROLES.index("register")
        for layer, block in enumerate(blocks):
            def pre(_module, args, kwargs, layer=layer):
                ctx.layer = layer
                fn(block_input(args, kwargs), ctx.roles == register, ctx)  # in place: the block's input is changed

            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        layers = []
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
