"""The recording attention function and its Recorder: what every attention layer computes, read
bit for bit as the family's eager attention computes it, and the replace modes of the interventions."""

from __future__ import annotations

import sys
import weakref
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode

from massive.core import arch, hooks
from massive.core.arch import repeat_kv
from massive.core.errors import MassiveError, check_finite
from massive.measure.defaults import SAMPLE_QUERIES

IMPLEMENTATION = "massive_eager"
# replace mode -> (the part it replaces, by what)
REPLACE = {
    "replace_massive_with_mean": ("massive", "mean"),
    "replace_random_with_mean": ("random", "mean"),
    "replace_other_with_mean": ("other", "mean"),
    "replace_massive_with_zero": ("massive", "zero"),
}
MODES = ("off", "record", *REPLACE)
PARTS = ("massive", "other", "random")

# ---------------------------------------------------------------- the recording attention function
_ACTIVE: list["Recorder"] = []  # the recorder of the running forward pass (a stack: innermost wins)
_EAGER: dict[type, Callable] = {}


def eager_of(module: torch.nn.Module) -> Callable:
    """The model family's own eager attention function (llama's where the family has none)."""
    cls = type(module)
    if cls not in _EAGER:
        fn = getattr(sys.modules[cls.__module__], "eager_attention_forward", None)
        if fn is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward as fn
        _EAGER[cls] = fn
    return _EAGER[cls]


def massive_eager(module, query, key, value, attention_mask, **kwargs):
    """Eager attention, observed (and in the replace modes, edited) by the active recorder."""
    out, probs = eager_of(module)(module, query, key, value, attention_mask, **kwargs)
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is None or (rec.mode == "off" and not rec.keep):
        return out, probs
    return rec.observe(module, query, key, value, attention_mask, probs, out, kwargs), probs


def register() -> None:
    """Register "massive_eager" with transformers (attention function and eager mask); idempotent.

    >>> register(); model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="massive_eager")
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, massive_eager)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def use_recording_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch a loaded model to the recording attention (the outputs stay eager's, bit for bit).
    Families whose attention does not go through transformers' attention interface (Falcon, GPT-J,
    BLOOM, Qwen3-Next's attention layers) run their own eager code, observed by `Softmaxes`.

        >>> model = use_recording_attention(model)
    """
    register()
    if getattr(model, "_supports_attention_backend", True) is False:
        _observe_outside_interface(model)
    elif getattr(model.config, "_attn_implementation", None) != IMPLEMENTATION:
        model.set_attn_implementation(IMPLEMENTATION)
    return model


def _attention_names(model: torch.nn.Module) -> list[str]:
    """Each block's attention module as `path (Type)`."""
    attentions = {id(m): i for i, m in enumerate(arch.find_parts(model).attentions)}
    out = [""] * len(attentions)
    for path, mod in model.named_modules():
        if id(mod) in attentions:
            out[attentions[id(mod)]] = f"{path.rsplit('.', 1)[-1]} ({type(mod).__name__})"
    return out


_SOFTMAX = {torch.nn.functional.softmax, torch.softmax, torch.Tensor.softmax}
_MATMUL = {torch.matmul, torch.bmm, torch.Tensor.__matmul__, torch.Tensor.matmul, torch.Tensor.bmm}
_OBSERVED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


class Softmaxes(TorchFunctionMode):
    """Inside the forward of an attention module that runs its own eager code: its softmax output
    (the probabilities, [batch, heads, queries, keys]) and the product of it (or of a view, cast or
    dropout of it) with the values, handed to the active recorder as massive_eager does; the
    product the recorder returns replaces the module's. Nothing else changes."""

    def __init__(self, module: torch.nn.Module, rec: "Recorder"):
        super().__init__()
        self.module, self.rec = module, rec
        self.probs: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None
        self.derived: list[torch.Tensor] = []

    def _is_derived(self, x) -> bool:
        return isinstance(x, torch.Tensor) and any(x is d for d in self.derived)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _SOFTMAX and self.probs is None and isinstance(out, torch.Tensor) and out.dim() == 4:
            self.probs, self.scores, self.derived = out, args[0], [out]
        elif self.probs is not None and args and self._is_derived(args[0]):
            if func in _MATMUL and len(args) > 1:
                return self._observe(args[1], out)
            if isinstance(out, torch.Tensor) and out.numel() == self.probs.numel():
                self.derived.append(out)  # .to(dtype), dropout, view: still the probabilities
        return out

    def _observe(self, value: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        b, h, q, k = self.probs.shape
        d = out.shape[-1]
        values = repeat_kv(value.reshape(b, -1, k, value.shape[-1]), h // (value.numel() // (b * k * value.shape[-1])))
        heads_first = out.reshape(b, h, q, d)
        scores = self.scores

        def kept() -> dict:
            x = scores.float()
            visible = (x > torch.finfo(x.dtype).min / 2) & (self.probs > 0)
            return {"logits": x.masked_fill(~visible, float("-inf")), "visible": visible}

        new = self.rec.observe_heads(
            self.module, self.probs, values, heads_first.transpose(1, 2), kept if self.rec.keep else None
        )
        self.probs = None  # one attention product per forward
        return new.transpose(1, 2).reshape(out.shape).to(out.dtype)


def _observe_outside_interface(model: torch.nn.Module) -> None:
    """Register, once, the hooks that run each attention module's forward under `Softmaxes` while a recorder is active."""
    if model in _OBSERVED:
        return
    for module in arch.find_parts(model).attentions:

        def enter(mod, _args):
            rec = _ACTIVE[-1] if _ACTIVE else None
            if rec is not None and (rec.mode != "off" or rec.keep):
                mode = Softmaxes(mod, rec)
                mode.__enter__()
                mod._massive_softmaxes = mode

        def leave(mod, _args, _out):
            mode = mod.__dict__.pop("_massive_softmaxes", None)
            if mode is not None:
                mode.__exit__(None, None, None)

        hooks.module_hooks(module, pre=enter, post=leave, always_call=True)
    _OBSERVED.add(model)


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _finite(x: torch.Tensor, where: str, dtype) -> None:
    """NonFiniteError naming `where` (and the first bad value) if `x` holds an inf or NaN."""
    bad = ~torch.isfinite(x)
    if bad.any():
        check_finite(float(x[bad][0]), where, dtype)


class Recorder:
    """What the recording attention function does with each layer's attention.

    >>> rec = Recorder(use_recording_attention(model))
    >>> rec.massive = torch.zeros(ids.shape, dtype=torch.bool); rec.massive[:, 0] = True
    >>> rec.random = torch.zeros(ids.shape, dtype=torch.bool); rec.random[:, 3] = True
    >>> with torch.inference_mode(), rec.active("record"):
    ...     model(ids)
    >>> rec.finish_means(); head_table(rec, 0.3)
    """

    def __init__(self, model: torch.nn.Module, sample_queries: int = SAMPLE_QUERIES):
        attentions = arch.find_parts(model).attentions
        self.layer_of = {id(m): i for i, m in enumerate(attentions)}
        self.n_layers = len(attentions)
        self.dtype = _dtype(model)
        self.mode = "off"
        self.keep = False  # keep every layer's logits, probs, values, output (and parts when recording)
        self.kept: dict[int, dict[str, torch.Tensor]] = {}
        self.massive: torch.Tensor | None = None  # [batch, seq] bool: the massive tokens of this batch
        self.random: torch.Tensor | None = None  # [batch, seq] bool: the control's random tokens
        self.layers: set[int] = set(range(self.n_layers))  # where the replace modes act
        self.sample_queries = sample_queries
        self.mass: dict[int, list[torch.Tensor]] = defaultdict(list)  # layer -> [[batch, heads, 2]]: first, massive
        self.sums: dict[tuple[str, int], torch.Tensor] = {}  # (part, layer) -> [heads, seq, d] float64
        self.count = 0  # sequences recorded (counted once per batch, at layer 0)
        self.samples: dict[tuple[str, int], list[torch.Tensor]] = defaultdict(list)  # [batch, heads, queries, d]
        self.means: dict[tuple[str, int], torch.Tensor] = {}
        self.names = {i: name for i, name in enumerate(_attention_names(model))}
        self.explicit_sink = False  # a layer with a learned sink logit per head was recorded
        self.hidden: dict[
            tuple[str, int], bool
        ] = {}  # (part, layer) -> its tokens exist but every sampled query is masked from them
        self.notes: dict[int, str] = {}  # layer -> why part of its decomposition is not there

    def skipped(self) -> dict[int, str]:
        """Layer -> the one line saying why it has no attention probabilities (a hybrid's linear
        attention): the layers no recorded pass saw."""
        return {
            layer: f"block {layer}'s {self.names.get(layer, 'attention')} computes no attention probabilities "
            "(linear attention): skipped"
            for layer in range(self.n_layers)
            if layer not in self.mass
        }

    @contextmanager
    def active(self, mode: str = "record", keep: bool = False):
        """Make this the recorder of the forward passes in the block, in `mode` (one of MODES)."""
        if mode not in MODES:
            raise MassiveError(f"unknown recorder mode {mode!r} (known: {', '.join(MODES)})")
        self.mode, self.keep = mode, keep
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)
            self.mode, self.keep = "off", False

    def part(self, probs: torch.Tensor, values: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """sum over the key positions in `keys` ([batch, seq] bool) of p * v: [batch, heads, queries, d]."""
        mask = keys[:, None, None, : probs.shape[-1]].to(torch.float32)
        return torch.matmul(probs.float() * mask, values.float())

    def observe(self, module, query, key, value, attention_mask, probs, out, kwargs) -> torch.Tensor:
        values = repeat_kv(value, query.shape[1] // value.shape[1])
        kept = (
            (lambda: logits(query, repeat_kv(key, query.shape[1] // key.shape[1]), attention_mask, kwargs))
            if self.keep
            else None
        )
        return self.observe_heads(module, probs, values, out, kept)

    def observe_heads(
        self,
        module,
        probs: torch.Tensor,
        values: torch.Tensor,
        out: torch.Tensor,
        kept_logits: Callable[[], dict] | None,
    ) -> torch.Tensor:
        """One layer's probabilities [batch, heads, queries, keys], values [batch, heads, keys, d] and
        output [batch, queries, heads, d]: recorded, kept, or edited (the new output)."""
        layer = self.layer_of.get(id(module), getattr(module, "layer_idx", None))
        if self.keep:
            self.kept[layer] = {
                "probs": probs.detach().clone(),
                "values": values.detach().clone(),
                "output": out.detach().transpose(1, 2).clone(),
                **kept_logits(),
            }
        if self.mode == "record":
            self.record(layer, probs, values, sink=isinstance(getattr(module, "sinks", None), torch.Tensor))
        elif self.mode != "off" and layer in self.layers:
            kind, by = REPLACE[self.mode]
            keys = {"massive": self.massive, "random": self.random, "other": ~self.massive}[kind]
            part = self.part(probs, values, keys)
            if by == "zero":
                new = torch.zeros_like(part)
            else:
                new = self.means[(kind, layer)][:, : part.shape[2]].to(part.device)
            # out + (new - part): with one calibration sequence, mean == part and out is unchanged, bit for bit
            out = (out.float() + (new - part).transpose(1, 2)).to(out.dtype)
        return out

    def record(self, layer: int, probs: torch.Tensor, values: torch.Tensor, sink: bool = False) -> None:
        massive = self.massive[:, : probs.shape[-1]]
        _finite(probs, f"attention: the attention probabilities of layer {layer}", self.dtype)
        parts = {
            "massive": self.part(probs, values, massive),
            "other": self.part(probs, values, ~massive),
            "random": self.part(probs, values, self.random),
        }
        p = probs.float()[:, :, 1:]  # queries at positions >= 1 (position 0 can only see itself)
        first = p[..., 0].mean(-1)
        on_massive = (p * massive[:, None, None, :].float()).sum(-1).mean(-1)
        # a learned sink (gpt-oss `sinks`) takes part in the softmax and its column is dropped: its share is 1 - row sum
        on_sink = (1.0 - p.sum(-1)).mean(-1) if sink else torch.zeros_like(first)
        self.mass[layer].append(torch.stack([first, on_massive, on_sink], dim=-1).cpu())
        self.explicit_sink |= sink
        t = probs.shape[2]
        queries = torch.linspace(t // 2, t - 1, min(self.sample_queries, t - t // 2)).round().long().unique()
        keysets = {"massive": massive, "other": ~massive, "random": self.random[:, : probs.shape[-1]]}
        for name, x in parts.items():
            keys = keysets[name][:, None, None, :]
            seen = bool(((probs[:, :, queries] > 0) & keys).any())
            self.hidden[(name, layer)] = self.hidden.get((name, layer), True) and bool(keys.any()) and not seen
            _finite(x, f"attention: the {name} tokens' part of layer {layer}'s attention output", self.dtype)
            s = x.sum(0).double().cpu()
            self.sums[(name, layer)] = s if (name, layer) not in self.sums else self.sums[(name, layer)] + s
            self.samples[(name, layer)].append(x[:, :, queries].cpu())
        if self.keep:
            self.kept[layer]["parts"] = {name: x.detach().clone() for name, x in parts.items()}
        if layer == 0:
            self.count += probs.shape[0]

    def finish_means(self) -> None:
        """The mean over the recorded sequences of each part, per layer, head and query position."""
        self.means = {k: (s / self.count).float() for k, s in self.sums.items()}


def logits(query: torch.Tensor, keys: torch.Tensor, attention_mask: torch.Tensor | None, kwargs: dict) -> dict:
    """QK^T * scaling (soft-capped where the model does), -inf where the mask hides a key:
    {"logits": [batch, heads, queries, keys] float32, "visible": bool of the same shape}.

        >>> logits(q, k, None, {})["logits"][0, 0]   # causal: -inf above the diagonal
    """
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    scores = torch.matmul(query.float(), keys.float().transpose(2, 3)) * scaling
    if kwargs.get("softcap"):
        scores = torch.tanh(scores / kwargs["softcap"]) * kwargs["softcap"]
    t, k = scores.shape[-2:]
    if attention_mask is None:
        visible = torch.ones(t, k, dtype=torch.bool, device=scores.device).tril(k - t)[None, None]
    elif attention_mask.dtype == torch.bool:
        visible = attention_mask[..., :k]
    else:
        visible = attention_mask[..., :k] == 0
    visible = visible.expand_as(scores)
    return {"logits": scores.masked_fill(~visible, float("-inf")), "visible": visible}
