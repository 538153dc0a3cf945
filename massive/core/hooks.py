"""Hook points by name, on the unmodified Hugging Face model: the one hook mechanism.

Names follow TransformerLens, and are the same in code, Parquet (`hook` columns) and plots:

  hook_tokens                 the model's forward input (input_ids, or pixel_values): read only
  blocks.{L}.hook_resid_pre   the residual stream entering block L (the block's input)
  blocks.{L}.hook_resid_post  the residual stream after block L (its output, after both
                              residual adds; what the paper measures)
  blocks.{L}.hook_attn_in     the input of block L's attention module (after its norm)
  blocks.{L}.hook_attn_out    what the residual stream receives from block L's attention: the
                              attention module's output, after the post-norm where the family
                              has one (Gemma-2/3, OLMo-2/3), times the residual multiplier
                              (Granite), without the residual where the module adds it (BLOOM);
                              resid_pre + attn_out + mlp_out == resid_post (`writers`)
  blocks.{L}.hook_mlp_in      the input of block L's MLP module (after its norm)
  blocks.{L}.hook_mlp_out     what the residual stream receives from block L's MLP (as attn_out)
  blocks.{L}.mlp.hook_post    the input of block L's down projection (the MLP's hidden activations)
  blocks.{L}.attn.hook_pattern  block L's attention probabilities [batch, heads, queries, keys]
                              (the model must run eager attention, which returns them)
  blocks.{L}.{path}.hook_in   the input of the linear layer at `path` inside block L (every
                              nn.Linear and GPT-2 Conv1D of the block, massive.core.arch.linears:
                              blocks.3.self_attn.q_proj.hook_in, blocks.3.mlp.down_proj.hook_in)
  ln_final.hook_normalized    the output of the final norm (after the last block; a ViT's final
                              CLS embedding is its position 0)

A hook function is `fn(tensor, name)`. It returns None to only read (or to edit the tensor in
place), or a tensor to replace it. Hooks are registered for the duration of a `with` block:

    >>> from massive.core import hooks
    >>> seen = {}
    >>> with hooks.hooked(model, {hooks.resid_post(3): lambda h, name: seen.setdefault(name, h.abs().max())}):
    ...     model(ids)
    >>> with hooks.cache(model, hooks.names(model, "blocks.*.hook_resid_post")) as store:
    ...     model(ids)
    >>> store["blocks.3.hook_resid_post"].shape   # float32, on the CPU
    torch.Size([1, 12, 576])
"""

from __future__ import annotations

import fnmatch
import inspect
import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from massive.core import arch
from massive.core.errors import MassiveError

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]
POINTS = (
    "hook_resid_pre",
    "hook_resid_post",
    "hook_attn_in",
    "hook_attn_out",
    "hook_mlp_in",
    "hook_mlp_out",
    "mlp.hook_post",
    "attn.hook_pattern",
)
FINAL_NORM = "ln_final.hook_normalized"
_NAME = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(p) for p in POINTS) + r")$")
LINEAR_IN = "hook_in"
_LINEAR = re.compile(r"^blocks\.(\d+)\.([A-Za-z0-9_.]+)\.hook_in$")


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_post(layer: int) -> str:
    """The hook name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def attn_in(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_in"


def linear_in(layer: int, path: str) -> str:
    """The hook name of the input of the linear layer at `path` inside block `layer`:
    linear_in(3, "mlp.down_proj") == "blocks.3.mlp.down_proj.hook_in"."""
    return f"blocks.{layer}.{path}.{LINEAR_IN}"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def mlp_in(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_in"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def mlp_post(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def layer_of(name: str) -> int:
    """The block index in a hook name: layer_of("blocks.7.hook_resid_post") == 7."""
    m = _NAME.match(name) or _LINEAR.match(name)
    if m is None:
        raise MassiveError(f"{name!r} is not a block hook name (blocks.L.<{'|'.join(POINTS)}>)")
    return int(m.group(1))


def names(model: nn.Module, pattern: str = "*") -> list[str]:
    """Every hook name of `model` that matches the glob `pattern`, in block order.

    >>> names(model, "blocks.*.hook_resid_post")[:2]
    ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
    """
    n = arch.num_layers(model.config)
    every = ["hook_tokens"] + [f"blocks.{layer}.{p}" for layer in range(n) for p in POINTS]
    blocks = arch.find_parts(model).blocks
    every += [linear_in(layer, path) for layer in range(n) for path, _, _ in arch.linears(blocks[layer])]
    every += [FINAL_NORM]
    return [name for name in every if fnmatch.fnmatchcase(name, pattern)]


@dataclass(frozen=True)
class HookPoint:
    """Where a name lives: a module, and whether it is that module's input ("pre") or output
    ("post", element `index` of a tuple output)."""

    name: str
    module: nn.Module
    side: str  # "pre" | "post"
    index: int = 0
    scale: float = 1.0  # the hook sees output * scale (Granite's residual_multiplier)
    residual: bool = False  # the hook sees output - the module's residual argument (BLOOM)


# ---------------------------------------------------------------- where each sublayer writes to the residual stream
@dataclass(frozen=True)
class Writer:
    """What the residual stream receives from one sublayer of a block: the output (element `index`
    of a tuple) of `module` (the sublayer itself, or the last of the post-norm / dropout / layer
    scale children applied to its output before the add: `chain`, their names), times `scale`
    (Granite's residual_multiplier), minus the module's `residual` argument where the module adds
    the residual itself (BLOOM). `exact`: None when resid_pre + attn_out + mlp_out == resid_post
    holds at this block, else the one-line reason it cannot."""

    module: nn.Module
    index: int = 0
    scale: float = 1.0
    residual: bool = False
    chain: tuple[str, ...] = ()
    exact: str | None = None


_WRITERS: "weakref.WeakKeyDictionary[nn.Module, list[dict[str, Writer]]]" = weakref.WeakKeyDictionary()


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.data_ptr() == b.data_ptr() and a.shape == b.shape


def probe_input(model: nn.Module) -> dict:
    """A 3-token (or one blank image's) forward input for `model`, on its input device."""
    device = next(model.parameters()).device
    config = model.config
    if getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", None):
        vocab = getattr(config, "vocab_size", None) or config.text_config.vocab_size
        return {"input_ids": torch.arange(3, device=device)[None] % int(vocab), "use_cache": False}
    vc = arch.vision_config(config)
    size = vc.image_size if isinstance(vc.image_size, int) else vc.image_size[0]
    pixels = torch.zeros(
        1, int(getattr(vc, "num_channels", 3)), size, size, device=device, dtype=next(model.parameters()).dtype
    )
    return arch.forward_kwargs(model, pixels)


def writers(model: nn.Module, parts: arch.Parts | None = None) -> list[dict[str, Writer]]:
    """Per block, {"attn": Writer, "mlp": Writer}: where the residual stream receives each sublayer's
    write (massive.core.hooks' hook_attn_out / hook_mlp_out). Found once per model by a probe pass that
    follows each sublayer's output tensor through the block's other children (a post-norm, a
    dropout, a layer scale: each child whose input is the tensor the previous one returned), and
    cached; with no forward hooks of the caller active.

        >>> w = writers(gemma2)[0]["attn"]; w.chain
        ('post_attention_layernorm',)
    """
    if model in _WRITERS:
        return _WRITERS[model]
    parts = parts or arch.find_parts(model)
    seen: dict[int, tuple] = {}  # id(module) -> (input tensor, output tensor)
    handles = []
    children = {}
    for block in parts.blocks:

        def keep_block(mod, args, kwargs):
            seen[id(mod)] = (_first_tensor(args) if args else _first_tensor(kwargs.get("hidden_states")), None)

        handles += module_hooks(block, pre=keep_block, with_kwargs=True)
        for name, child in block.named_children():
            children[id(child)] = name

            def keep(mod, args, kwargs, out):
                seen[id(mod)] = (
                    _first_tensor(args) if args else _first_tensor(kwargs.get("hidden_states")),
                    _first_tensor(out),
                )

            handles += module_hooks(child, post=keep, with_kwargs=True)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(**probe_input(model))
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is reported with the family
        raise MassiveError(
            f"model_type={model.config.model_type!r}: the probe pass that finds where each sublayer writes "
            f"to the residual stream failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scale = 1.0
    out = []
    for i, block in enumerate(parts.blocks):
        scale = float(getattr(block, "residual_multiplier", 1.0) or 1.0)
        here = {}
        for part, sub in (("attn", parts.attentions[i]), ("mlp", parts.mlps[i])):
            if sub is None:
                continue
            params = inspect.signature(sub.forward).parameters
            if "residual" in params:  # BLOOM: the module returns residual + its write
                exact = None
                if getattr(model.config, "apply_residual_connection_post_layernorm", False):
                    exact = (
                        f"model_type={model.config.model_type!r} with apply_residual_connection_post_layernorm adds "
                        "the normed stream as the residual, so resid_pre + attn_out + mlp_out != resid_post"
                    )
                here[part] = Writer(module=sub, index=0, residual=True, exact=exact)
                continue
            module, chain = sub, []
            if id(sub) in seen:
                tensor = seen[id(sub)][1]
                while True:
                    nxt = [
                        (children[id(c)], c)
                        for c in block.children()
                        if c is not module
                        and id(c) in seen
                        and c is not parts.attentions[i]
                        and c is not parts.mlps[i]
                        and _same(seen[id(c)][0], tensor)
                        and any(True for _ in c.parameters())
                    ]  # dropouts (no weights) are the identity in eval
                    if len(nxt) != 1:
                        break
                    chain.append(nxt[0][0])
                    module, tensor = nxt[0][1], seen[id(nxt[0][1])][1]
            here[part] = Writer(module=module, index=0, scale=scale, chain=tuple(chain))
        out.append(here)
        mlp = parts.mlps[i]
        if id(block) in seen and mlp is not None and id(mlp) in seen and id(parts.attentions[i]) in seen:
            x, m_in, a_in = seen[id(block)][0], seen[id(mlp)][0], seen[id(parts.attentions[i])][0]
            feeders = [c for c in block.children() if id(c) in seen and c is not mlp and _same(seen[id(c)][1], m_in)]
            arch._PARALLEL[block] = (
                _same(m_in, a_in) or _same(m_in, x) or any(_same(seen[id(c)][0], x) for c in feeders)
            )
    _WRITERS[model] = out
    return out


def decomposition_note(model: nn.Module, parts: arch.Parts | None = None) -> str | None:
    """None when resid_pre + attn_out + mlp_out == resid_post at every block of `model`, else the
    one line that says why not (the origins table's `other` is then not a post-norm remainder)."""
    notes = {w.exact for ws in writers(model, parts) for w in ws.values() if w.exact}
    return "; ".join(sorted(notes)) or None


def resolve(model: nn.Module, name: str, parts: arch.Parts | None = None) -> HookPoint:
    """The module and side of hook `name` in `model`."""
    if name == "hook_tokens":
        return HookPoint(name, model, "pre")
    parts = parts or arch.find_parts(model)
    if name == FINAL_NORM:
        if parts.final_norm is None:
            raise MassiveError(f"{name}: no final norm found after the blocks of {type(model).__name__}")
        return HookPoint(name, parts.final_norm, "post")
    layer = layer_of(name)
    if not 0 <= layer < len(parts.blocks):
        raise MassiveError(f"{name}: the model has blocks 0..{len(parts.blocks) - 1}")
    point = name.split(".", 2)[2]
    linear = _LINEAR.match(name)
    if linear is not None and not _NAME.match(name):
        path = linear.group(2)
        found = {p: mod for p, mod, _ in arch.linears(parts.blocks[layer])}
        if path not in found:
            raise MassiveError(
                f"{name}: block {layer} has no linear layer {path!r} (its linear layers: {', '.join(found)})"
            )
        return HookPoint(name, found[path], "pre")
    if point == "hook_resid_pre":
        return HookPoint(name, parts.blocks[layer], "pre")
    if point == "hook_resid_post":
        return HookPoint(name, parts.blocks[layer], "post")
    if point == "hook_attn_in":
        return HookPoint(name, parts.attentions[layer], "pre")
    if point in ("hook_attn_out", "hook_mlp_out"):
        part = "attn" if point == "hook_attn_out" else "mlp"
        if parts.mlps[layer] is None and part == "mlp":
            raise MassiveError(f"{name}: block {layer} of {type(model).__name__} has no MLP module of its own")
        w = writers(model, parts)[layer][part]
        return HookPoint(name, w.module, "post", index=w.index, scale=w.scale, residual=w.residual)
    if point == "attn.hook_pattern":
        return HookPoint(name, parts.attentions[layer], "post", index=1)
    mlp = parts.mlps[layer]
    if mlp is None:
        raise MassiveError(f"{name}: block {layer} of {type(model).__name__} has no MLP module of its own")
    if point == "hook_mlp_in":
        return HookPoint(name, mlp, "pre")
    down, _ = arch.down_projection(mlp, arch.hidden_size(model.config))
    return HookPoint(name, down, "pre")


def _input(args: tuple, kwargs: dict, root: bool) -> tuple[torch.Tensor, str | int]:
    """The tensor a pre-hook sees, and where it sits (a kwarg name or a positional index)."""
    keys = ("input_ids", "pixel_values", "inputs_embeds") if root else ("hidden_states",)
    for key in keys:
        if kwargs.get(key) is not None:
            return kwargs[key], key
    if args:
        return args[0], 0
    raise MassiveError(f"no input tensor in the forward call (looked for {', '.join(keys)})")


def _register(point: HookPoint, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
    name, root = point.name, point.name == "hook_tokens"
    if point.side == "pre":

        def pre(_module, args, kwargs):
            x, where = _input(args, kwargs, root)
            new = fn(x, name)
            if new is None or root:
                return None
            if isinstance(where, str):
                return args, {**kwargs, where: new}
            return (new, *args[1:]), kwargs

        return point.module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_module, args, kwargs, output):
        x = output[point.index] if isinstance(output, tuple) else output
        if x is None:
            raise MassiveError(
                f"{name}: the module returned no tensor there (attention patterns need attn_implementation='eager')"
            )
        if point.residual or point.scale != 1.0:  # the hook sees what the residual stream receives
            residual = (kwargs["residual"] if "residual" in kwargs else args[1]) if point.residual else None
            seen = x - residual if point.residual else x * point.scale
            before = seen.clone()  # (inference tensors have no version counter to tell an in-place edit)
            new = fn(seen, name)
            if new is None and not torch.equal(seen, before):  # edited in place: carry the edit back
                new = seen
            if new is not None:
                new = new + residual if point.residual else new / point.scale
        else:
            new = fn(x, name)
        if new is None:
            return None
        if isinstance(output, tuple):
            return (*output[: point.index], new, *output[point.index + 1 :])
        return new

    return point.module.register_forward_hook(post, with_kwargs=True)


def module_hooks(
    module: nn.Module,
    pre: Callable | None = None,
    post: Callable | None = None,
    with_kwargs: bool = False,
    always_call: bool = False,
) -> list[torch.utils.hooks.RemovableHandle]:
    """Raw PyTorch forward hooks on one module, for the library's own machinery rather than a hook
    point (massive.core.arch's probe pass; massive.measure.attention's recorder for families outside
    transformers' attention interface): `pre(module, args[, kwargs])`, `post(module, args[, kwargs],
    output)`. Returns the handles (the caller removes them).

        >>> handles = module_hooks(block, post=lambda m, a, out: print(type(out)))
    """
    handles = []
    if pre is not None:
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=with_kwargs))
    if post is not None:
        handles.append(module.register_forward_hook(post, with_kwargs=with_kwargs, always_call=always_call))
    return handles


@contextmanager
def hooked(model: nn.Module, fns: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]) -> Iterator[nn.Module]:
    """Register `fn(tensor, name)` at every named hook point for the duration of the block.
    Several functions may share a name (pass pairs); they run in the order given.

        >>> zero_dim = lambda h, name: h.index_fill_(-1, torch.tensor([507]), 0.0)  # in place
        >>> with hooked(model, {resid_post(11): zero_dim}):
        ...     logits = model(ids).logits
    """
    items = list(fns.items()) if isinstance(fns, Mapping) else list(fns)
    parts = arch.find_parts(model) if any(name != "hook_tokens" for name, _ in items) else None
    if any(name.endswith(("hook_attn_out", "hook_mlp_out")) for name, _ in items):
        writers(model, parts)  # its probe pass runs before any of these hooks is registered
    handles = []
    try:
        for name, fn in items:
            handles.append(_register(resolve(model, name, parts), fn))
        yield model
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def cache(model: nn.Module, names_: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Keep a float32 CPU copy of every named tensor of the forward passes in the block (the last
    pass's, when there are several): TransformerLens's run_with_cache, on the Hugging Face model.

        >>> with cache(model, [resid_post(3), pattern(3)]) as store:
        ...     model(ids)
        >>> store[resid_post(3)].dtype
        torch.float32
    """
    store: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, name: str) -> None:
        store[name] = x.detach().to(
            device="cpu", dtype=torch.float32, copy=True
        )  # a copy: Falcon adds to its MLP output in place

    with hooked(model, [(name, keep) for name in names_]):
        yield store
