"""Interventions on massive activations: the paper's causal test (Sun et al. 2024, Sec. 4).

An intervention edits the residual stream during forward passes, through the hook points of
massive.core.hooks: at `blocks.{L}.hook_resid_post` (the output of block L) for the blocks it is
applied at, or, for the ones marked `before_blocks`, at `blocks.{L}.hook_resid_pre` (the input of
every block). The targets at a block are found on the tensor itself, with the detection's rule
restricted to the dims detection found: the entries of those dims with |a| > min_abs and
> min_ratio x the median |a| of the sequence at that block (`massive_mask`). At the later blocks
of a multi-block intervention (from_emerge, a list) the entries targeted at its first block are
targeted again too, whatever their size there: the intervention is sustained on them (zeroed
once, an activation that a later block writes again below the rule is zeroed again). Each intervention
is a named function `fn(h, mask, ctx) -> None` that edits `h` [batch, seq, dim] in place at the
entries it targets; registering a new one is one decorated function (`@intervention("name")`).

  none         nothing (the baseline)
  zero         the massive entries set to 0
  mean         each massive entry set to the mean of its (block, dim, token role) over the
               capture's sequences (`massive_means`, from the detection, never typed in); a role
               the capture never saw in that dim takes the (block, dim) mean over all roles
  random_zero  the control: as many entries as there are massive ones, drawn (seeded) among the
               ordinary entries of the same sequence, set to 0
  top_zero     the control matched in magnitude: as many entries as there are massive ones, the
               largest non-massive ones of the same sequence (the k-th largest massive entry
               matched with the k-th largest of the others), set to 0; no entry that passes the
               detection's rule in any dim is touched
  same_token_zero
               the control matched in position: at each token holding massive entries, as many
               ordinary dims of that token, drawn (seeded), set to 0
  fix_register_mean
               (vision transformers with registers; before every block) every register token's
               whole vector replaced by its mean at that block's input over calibration images
               (ctx.register_means, from `position_means`): the paper's test that registers act
               as fixed biases

The high-level entry point is `intervene`, a context manager taking the detection:

    >>> found = massive.detect(stats, min_abs=100, min_ratio=1000)
    >>> with massive.intervene(model, found, "zero", layers="emerge", tokenizer=tok) as ctx:
    ...     ppl = massive.perplexity(model, chunks)
    >>> ctx.changed          # entries the intervention changed
    48

The lower-level `applied(model, name, layers, dims, min_abs, min_ratio, ctx, roles_of)` takes the
targets as plain lists (what `intervene` calls).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError
from massive.intervene.registry import (  # noqa: F401 - the registry's public names, also importable from here
    BEFORE_BLOCKS,
    INTERVENTIONS,
    LAYER_KEYWORDS,
    LAYER_WORDS,
    intervention,
)
from massive.measure.detect import DELIMITERS, MIN_ABS, MIN_RATIO, role, thresholds

ROLES = ("first", "delimiter", "other", "cls", "register", "patch", "bos")  # text roles, vision roles, then the BOS
Means = dict[tuple[int, int, str], float]  # (block, dim, role) -> mean signed value; role "any": over all roles


def lookup(name: str) -> Callable:
    """The function of intervention `name`; an unknown name is a MassiveError listing the known ones."""
    if name not in INTERVENTIONS:
        raise MassiveError(f"unknown intervention {name!r} (known: {', '.join(sorted(INTERVENTIONS))})")
    return INTERVENTIONS[name]


@dataclass
class Context:
    """What an intervention may need besides the tensor it edits, and what it did.

    layer: the block being edited (set by `applied` before every call); roles: [batch, seq] index
    into ROLES of the current forward pass; means: from `massive_means`; generator: the seeded
    draws of random_zero; changed: entries changed so far, over every forward pass in the block;
    register_means: block -> [registers, dim] at its input, from `position_means`; min_abs,
    min_ratio: the detection's rule (set by `applied`); targeted: the
    massive entries of the first block the intervention acts at, in the current forward pass,
    found before the edit ([batch, seq, dim] bool; what massive.measure.regrowth follows downstream)."""

    layer: int = -1
    roles: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    means: Means = field(default_factory=dict)
    generator: torch.Generator | None = None
    changed: int = 0
    register_means: dict[int, torch.Tensor] = field(default_factory=dict)
    targeted: torch.Tensor | None = None
    min_abs: float = MIN_ABS  # the detection's rule (set by `applied`): what top_zero must not touch
    min_ratio: float = MIN_RATIO


# ---------------------------------------------------------------- the interventions
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


@intervention("top_zero")
def top_zero(h: torch.Tensor, mask: torch.Tensor, ctx: Context) -> None:
    counts = mask.flatten(1).sum(1).tolist()
    if not any(counts):
        return
    rule = massive_mask(
        h, range(h.shape[-1]), ctx.min_abs, ctx.min_ratio
    )  # massive by the detection's rule, in any dim
    a = h.detach().to(torch.float32).abs().masked_fill(mask | rule, -1.0)
    for b, n in enumerate(counts):
        if n:
            pick = a[b].flatten().topk(n).indices
            if bool((a[b].flatten()[pick] < 0).any()):
                raise MassiveError(f"top_zero: block {ctx.layer} has fewer than {n} non-massive entries to zero")
            h[b].view(-1)[pick] = 0
            ctx.changed += n


@intervention("same_token_zero")
def same_token_zero(h: torch.Tensor, mask: torch.Tensor, ctx: Context) -> None:
    for b, t in mask.any(-1).nonzero().tolist():
        n = int(mask[b, t].sum())
        ordinary = (~mask[b, t]).nonzero().flatten()
        if ordinary.numel() < n:
            raise MassiveError(f"same_token_zero: block {ctx.layer}, position {t} has fewer than {n} ordinary dims")
        h[b, t, ordinary[torch.randperm(ordinary.numel(), generator=ctx.generator)[:n]]] = 0
        ctx.changed += n


@intervention("fix_register_mean", before_blocks=True)
def fix_register_mean(h: torch.Tensor, positions: torch.Tensor, ctx: Context) -> None:
    pos = positions[0].nonzero().flatten()  # the layout is the same for every image
    if pos.numel() == 0:
        return
    if ctx.layer not in ctx.register_means:
        raise MassiveError(f"fix_register_mean: no register mean for block {ctx.layer} (calibrate with position_means)")
    h[:, pos] = ctx.register_means[ctx.layer].to(device=h.device, dtype=h.dtype)
    ctx.changed += h.shape[0] * pos.numel() * h.shape[-1]


# ---------------------------------------------------------------- targets
def massive_mask(h: torch.Tensor, dims: Sequence[int], min_abs: float, min_ratio: float) -> torch.Tensor:
    """Bool mask like `h` [batch, seq, dim]: the entries of `dims` with |a| > min_abs and
    > min_ratio x the median |a| of their sequence (the detection's rule, on this tensor).

        >>> massive_mask(h, [1415, 2533], 100.0, 1000.0).sum()
        tensor(32)
    """
    a = h.detach().to(torch.float32).abs()
    median = a.flatten(1).median(dim=1).values.view(-1, 1, 1)
    mask = torch.zeros_like(a, dtype=torch.bool)
    if dims:
        idx = torch.tensor(list(dims), device=h.device)
        sel = a[..., idx]
        mask[..., idx] = (sel > min_abs) & (sel > min_ratio * median)
    return mask


def massive_means(massive: pd.DataFrame) -> Means:
    """Mean signed value of each (block, dim, role), and of each (block, dim) as role "any", over
    the detection's massive entries (columns layer, dim, role, value): what `mean` writes.

        >>> massive_means(found.massive)[(2, 1415, "first")]
        -1204.5
    """
    if massive.empty:
        return {}
    means = massive.groupby(["layer", "dim", "role"])["value"].mean()
    out = {(int(layer), int(dim), r): float(v) for (layer, dim, r), v in means.items()}
    for (layer, dim), v in massive.groupby(["layer", "dim"])["value"].mean().items():
        out[(int(layer), int(dim), "any")] = float(v)
    return out


def parse_layers(spec: Any, emerge: int | None, n_layers: int) -> list[int]:
    """The blocks named by a layers spec: "emerge" (the block where detection saw the massive
    activations appear; none when it found none), "from_emerge" (that block and every later one:
    the intervention sustained), "all", or a list of block indices.

        >>> parse_layers("emerge", 2, 30), parse_layers("from_emerge", 2, 5), parse_layers("all", 2, 3)
        ([2], [2, 3, 4], [0, 1, 2])
        >>> parse_layers([4, 5], 2, 30)
        [4, 5]
    """
    if isinstance(spec, str):
        if spec == "emerge":
            return [] if emerge is None else [int(emerge)]
        if spec == "from_emerge":
            return [] if emerge is None else list(range(int(emerge), n_layers))
        if spec == "all":
            return list(range(n_layers))
        raise MassiveError(f"ablate layers spec {spec!r} is not {LAYER_WORDS} or a list of block indices (e.g. [2, 3])")
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    try:
        layers = [int(x) for x in spec if not isinstance(x, bool) and int(x) == x]
        valid = len(layers) == len(spec) and len(layers) > 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise MassiveError(f"ablate layers spec {spec!r} is not {LAYER_WORDS} or a list of block indices (e.g. [2, 3])")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise MassiveError(f"ablate layer {bad[0]} is out of range: the model has blocks 0..{n_layers - 1}")
    return layers


@dataclass
class Targets:
    """Where an intervention acts: the blocks, the massive dims, and the means `mean` writes."""

    layers: list[int]
    dims: list[int]
    means: Means


def emerge_layer(found: Any) -> int | None:
    """The emergence block of a detection: `found.result["emerge_layer"]` or `found.emerge_layer`."""
    result = getattr(found, "result", None)
    if isinstance(result, dict) and "emerge_layer" in result:
        return result["emerge_layer"]
    return getattr(found, "emerge_layer", None)


def targets(found: Any, layers: Any, n_layers: int) -> Targets:
    """The targets of a detection (massive.detect's result, or any object with DataFrames
    `summary` (column dim) and `massive` (layer, dim, role, value) and an emergence block, see
    `emerge_layer`) at the blocks of the layers spec (see `parse_layers`).

        >>> t = targets(found, "emerge", n_layers=30)
        >>> t.layers, t.dims
        ([2], [1415, 2533])
    """
    return Targets(
        layers=parse_layers(layers, emerge_layer(found), n_layers),
        dims=sorted(int(d) for d in found.summary["dim"].unique()),
        means=massive_means(found.massive),
    )


# ---------------------------------------------------------------- token roles
class TokenRoles:
    """input_ids [batch, seq] -> role index (into ROLES: bos, first, delimiter, other) per
    position, decoding each id once; the roles of detection (massive.measure.detect.role). `bos`: every
    sequence begins with the BOS (the run's protocol, as detection was told), or None: a
    sequence that begins with the tokenizer's BOS token id does (inputs made elsewhere, e.g. by
    an evaluation harness); role bos there and first after it.

        >>> TokenRoles(tok, [".", "\\n"])(ids).shape == ids.shape
        True
    """

    def __init__(self, tok, delimiters: Iterable[str] = DELIMITERS, bos: bool | None = None):
        self.tok, self.delimiters, self.texts, self.bos = tok, list(delimiters), {}, bos

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in ids.tolist():
            for i in row:
                if i not in self.texts:
                    self.texts[i] = self.tok.decode([i])
            bos = (
                self.bos
                if self.bos is not None
                else (
                    bool(row)
                    and getattr(self.tok, "bos_token_id", None) is not None
                    and row[0] == self.tok.bos_token_id
                )
            )
            rows.append([ROLES.index(role(t, self.texts[i], self.delimiters, bos)) for t, i in enumerate(row)])
        return torch.tensor(rows, dtype=torch.long)


# ---------------------------------------------------------------- calibration
@torch.inference_mode()
def position_means(
    model: nn.Module, batches: Iterable, forward: Callable, positions: list[int]
) -> dict[int, torch.Tensor]:
    """The mean vector, at the input of every block (`blocks.{L}.hook_resid_pre`), of each of
    `positions` over all inputs of `batches` (each run by `forward(batch)`), in float32, on the
    CPU: block -> [len(positions), dim]. What fix_register_mean writes (ctx.register_means).

        >>> means = position_means(model, pixels.split(8), lambda b: model(pixel_values=b), [1, 2, 3, 4])
        >>> means[0].shape
        torch.Size([4, 768])
    """
    sums: dict[int, torch.Tensor] = {}

    def add(h: torch.Tensor, name: str) -> None:
        layer = hooks.layer_of(name)
        s = h[:, positions].to(torch.float32).sum(0)
        sums[layer] = s if layer not in sums else sums[layer] + s

    count = 0
    with hooks.hooked(model, {name: add for name in hooks.names(model, "blocks.*.hook_resid_pre")}):
        for batch in batches:
            forward(batch)
            count += len(batch)
    return {layer: s.cpu() / count for layer, s in sums.items()}


# ---------------------------------------------------------------- applying them
@contextmanager
def applied(
    model: nn.Module,
    name: str,
    layers: Sequence[int],
    dims: Sequence[int],
    min_abs: float,
    min_ratio: float,
    ctx: Context,
    roles_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[Context]:
    """Apply intervention `name` at `blocks.{L}.hook_resid_post` for each L in `layers`, on the
    entries `massive_mask(h, dims, min_abs, min_ratio)`, during the forward passes of the block
    (a `before_blocks` one: at `blocks.{L}.hook_resid_pre` of every block, on the positions of
    role "register"; `layers` and `dims` are then unused). Yields `ctx` (ctx.changed counts).

    With `roles_of`, every forward pass first sets ctx.roles = roles_of(inputs) (input_ids, or
    pixel_values for a vision model; at `hook_tokens`), so callers that do not control batching
    (an evaluation harness) still give `mean` the token roles.

        >>> ctx = Context(means=massive_means(found.massive))
        >>> with applied(model, "mean", [2], [1415], 100.0, 1000.0, ctx, TokenRoles(tok)):
        ...     model(ids)
    """
    fn = lookup(name)
    ctx.min_abs, ctx.min_ratio = min_abs, min_ratio
    fns: list[tuple[str, hooks.HookFn]] = []
    if roles_of is not None:

        def set_roles(x: torch.Tensor, _hook: str) -> None:
            if not (x.is_floating_point() and x.dim() == 3):  # inputs_embeds: no token ids to take roles from
                ctx.roles = roles_of(x).to(x.device)

        fns.append(("hook_tokens", set_roles))
    if name in BEFORE_BLOCKS:
        register = ROLES.index("register")

        def before(h: torch.Tensor, hook: str) -> None:
            ctx.layer = hooks.layer_of(hook)
            fn(h, ctx.roles == register, ctx)  # in place: the block's input is changed

        fns += [(hook, before) for hook in hooks.names(model, "blocks.*.hook_resid_pre")]
    else:
        first = min(layers, default=None)

        def after(h: torch.Tensor, hook: str) -> None:
            ctx.layer = hooks.layer_of(hook)
            mask = massive_mask(h, dims, min_abs, min_ratio)
            if ctx.layer == first:
                ctx.targeted = mask
            elif ctx.targeted is not None and ctx.targeted.shape == mask.shape:
                mask = mask | ctx.targeted  # sustained: the first block's targets too, massive again or not
            fn(h, mask, ctx)  # in place: the block's output is changed

        fns += [(hooks.resid_post(layer), after) for layer in layers]
    with hooks.hooked(model, fns):
        yield ctx


@contextmanager
def intervene(
    model: nn.Module,
    found: Any,
    name: str,
    layers: Any = "emerge",
    tokenizer=None,
    seed: int = 1,
    min_abs: float | None = None,
    min_ratio: float | None = None,
    delimiters: Iterable[str] | None = None,
    roles_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
    register_means: dict[int, torch.Tensor] | None = None,
) -> Iterator[Context]:
    """Intervention `name` on `model` for the duration of the block, at the massive activations
    of `found` (a massive.detect result, or `Targets`, then `layers` is unused) at the blocks of
    `layers` ("emerge", "from_emerge", "all" or a list of block indices). Yields the Context (ctx.changed).

    tokenizer (or roles_of): the token roles `mean` needs (TokenRoles(tokenizer, delimiters));
    seed: random_zero's draws; min_abs, min_ratio, delimiters: the detection's rule (None: those
    `found` was made with where it records them, else 100, 1000 and DELIMITERS);
    register_means: fix_register_mean's calibration (`position_means`).

        >>> with intervene(model, found, "mean", layers="emerge", tokenizer=tok, seed=1) as ctx:
        ...     ppl = perplexity(model, chunks)
    """
    lookup(name)  # an unknown name fails before anything is set up
    if isinstance(found, Targets):
        where = found
    else:
        where = targets(found, layers, arch.num_layers(model.config))
    recorded = thresholds(found)
    min_abs = recorded[0] if min_abs is None else min_abs
    min_ratio = recorded[1] if min_ratio is None else min_ratio
    if roles_of is None and tokenizer is not None:
        roles_of = TokenRoles(
            tokenizer, _recorded(found, "delimiters", DELIMITERS) if delimiters is None else delimiters
        )
    if name == "mean" and roles_of is None and where.layers:
        raise MassiveError("intervention 'mean' needs the token roles: pass tokenizer= (or roles_of=)")
    ctx = Context(
        means=where.means, generator=torch.Generator().manual_seed(seed), register_means=dict(register_means or {})
    )
    with applied(model, name, where.layers, where.dims, min_abs, min_ratio, ctx, roles_of):
        yield ctx


def _recorded(found: Any, key: str, default: Any) -> Any:
    """A threshold a detection records (in its `thresholds` dict, or as an attribute), else `default`."""
    thresholds = getattr(found, "thresholds", None)
    if isinstance(thresholds, dict) and thresholds.get(key) is not None:
        return thresholds[key]
    value = getattr(found, key, None)
    return default if value is None or callable(value) else value
