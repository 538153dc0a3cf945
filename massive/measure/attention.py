"""Attention sinks, the implicit attention bias, and its causal test (the paper's Sec. 4).

Massive activations make attention concentrate on their tokens, and what those tokens add to
each attention output (the sum over them of p * v) is nearly the same for every input: an
implicit attention bias. This module measures both on any Hugging Face decoder and tests the
claim by intervention.

How attention is read. Fused kernels do not return probabilities, and log(probs) is no logit
for a masked entry, so the model runs with attn_implementation="massive_eager": an attention
function registered with transformers' AttentionInterface (and the eager mask) that calls the
model family's own `eager_attention_forward` (so the outputs are eager's, bit for bit) and hands
queries, keys, values (after rotary embedding and repeat_kv), the mask, the probabilities and
the output to the active `Recorder`. Without a recorder, or in mode "off", it is plain eager
attention. The recorder's modes:

  off                        nothing (keep=True still keeps every layer's tensors: tests, heatmaps)
  record                     accumulate attention mass and the split of each head's output
                             into the part from the massive-activation tokens and the rest
  replace_massive_with_mean  the massive tokens' part of each output is replaced by its mean
                             over the calibration sequences (per layer, head, query position)
  replace_random_with_mean   the control: the same for random ordinary tokens' part
  replace_other_with_mean    a second control: every other token's part (as large as the massive one)
  replace_massive_with_zero  the reference: the massive tokens' part removed (what the bias is worth)

The massive-activation tokens of a sequence are the positions where detection found a massive
activation in any block (`calibration_tokens` of detect's massive table for the calibration
sequences; `finding_tokens` finds them on the detected dims during the baseline perplexity pass).
Where detection found none, the first token stands in.

    >>> from massive.measure import attention
    >>> res = attention.analyse(model, ids, found.massive, emerge=found.emerge_layer)
    >>> res.layers[["layer", "mass_first", "mass_massive", "sink_1_share"]]
    >>> ppl = attention.intervention_perplexities(model, chunks, res, dims=[138, 378], min_abs=100, min_ratio=1000)
"""

from __future__ import annotations

import sys
import weakref
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch.overrides import TorchFunctionMode
from tqdm import tqdm

from massive.core import arch, hooks
from massive.core.errors import MassiveError, NonFiniteError, check_finite
from massive.intervene.comparison import HARMFUL, HARMLESS, RESAMPLES, compare
from massive.intervene.interventions import massive_mask

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
# perplexity variant -> recorder mode
VARIANTS = {
    "none": "off",
    "massive_mean": "replace_massive_with_mean",
    "random_mean": "replace_random_with_mean",
    "other_mean": "replace_other_with_mean",
    "massive_zero": "replace_massive_with_zero",
}


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


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[batch, kv_heads, seq, d] -> [batch, kv_heads * groups, seq, d] (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


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


def _device(model: torch.nn.Module) -> torch.device:
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

    def __init__(self, model: torch.nn.Module, sample_queries: int = 32):
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


# ---------------------------------------------------------------- which tokens are massive
def calibration_tokens(massive: pd.DataFrame, seq_ids: list[int], seq_len: int) -> torch.Tensor:
    """[sequences, seq_len] bool: where detection (its `massive` table: seq_id, position, ...)
    found a massive activation in any block. Nothing detected: the first token stands in.

        >>> calibration_tokens(pd.DataFrame({"seq_id": [0], "position": [0]}), [0, 1], 4).int()
        tensor([[1, 0, 0, 0],
                [0, 0, 0, 0]], dtype=torch.int32)
    """
    mask = torch.zeros(len(seq_ids), seq_len, dtype=torch.bool)
    if massive.empty:
        mask[:, 0] = True  # nothing detected: the first token stands in
        return mask
    where = massive.groupby("seq_id")["position"].unique()
    for i, s in enumerate(seq_ids):
        if s in where.index:
            mask[i, torch.as_tensor(where[s].astype(np.int64))] = True
    return mask


def random_tokens(massive: torch.Tensor, seed: int) -> torch.Tensor:
    """Control positions: as many as the massive tokens per sequence (on average, at least one),
    drawn once (seeded) in the first half among positions massive in no calibration sequence.

        >>> random_tokens(torch.eye(1, 32, dtype=torch.bool), seed=1)   # one position in 1..15
    """
    t = massive.shape[1]
    k = max(1, round(massive.sum(1).float().mean().item()))
    pool = [p for p in range(1, max(2, t // 2)) if not massive[:, p].any()]
    if not pool:
        raise MassiveError(
            f"no position for the random control: every position 1..{max(2, t // 2) - 1} of the "
            f"{t}-token calibration sequences is massive in one of them (use longer sequences)"
        )
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist()), dtype=torch.long)


def at(positions: torch.Tensor, n: int, t: int, exclude: torch.Tensor) -> torch.Tensor:
    """[n, t] bool: `positions` (those < t) in every row, except where `exclude` is True.

    >>> at(torch.tensor([1, 9]), 2, 4, torch.zeros(2, 4, dtype=torch.bool)).int()
    tensor([[0, 1, 0, 0],
            [0, 1, 0, 0]], dtype=torch.int32)
    """
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[:, positions[positions < t]] = True
    return mask & ~exclude


# ---------------------------------------------------------------- measures
def head_table(rec: Recorder, sink_threshold: float) -> pd.DataFrame:
    """Per (layer, head): mean attention that queries at positions >= 1 put on the first token
    (mass_first), on the massive tokens (mass_massive), on a learned sink (mass_sink: gpt-oss's
    `sinks` logit, the share its dropped softmax column took; 0 where the model has none), on the
    rest (mass_other; the four sum to 1 with mass_first inside mass_massive when the first token is
    massive); sink: a Sink_1 head (mass_first > sink_threshold, Gu et al. 2024). Layers without
    attention probabilities (a hybrid's linear attention, Recorder.skipped) have no rows.

        >>> head_table(rec, sink_threshold=0.3).columns.tolist()
        ['layer', 'head', 'mass_first', 'mass_massive', 'mass_sink', 'mass_other', 'sink']
    """
    rows = []
    for layer in sorted(rec.mass):
        m = torch.cat(rec.mass[layer]).mean(0)  # [heads, 3], mean over sequences
        for h in range(m.shape[0]):
            first, massive, sink = float(m[h, 0]), float(m[h, 1]), float(m[h, 2])
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "mass_first": first,
                    "mass_massive": massive,
                    "mass_sink": sink,
                    "mass_other": 1.0 - massive - sink,
                    "sink": first > sink_threshold,
                }
            )
    if not rows:
        raise MassiveError(
            "attention: no layer computed attention probabilities (" + "; ".join(rec.skipped().values()) + ")"
        )
    return pd.DataFrame(rows)


def layer_table(heads: pd.DataFrame, emerge: int | None, layer_stats: pd.DataFrame | None) -> pd.DataFrame:
    """Per layer: head means of head_table, the Sink_1 share of heads, whether the layer's input
    holds massive activations (layer > emerge), and top-1 |a| / median |a| of capture's layer_stats.

        >>> layer_table(head_table(rec, 0.3), emerge=1, layer_stats=None)["massive_in_input"].tolist()
        [False, False, True, True]
    """
    out = heads.groupby("layer", as_index=False).agg(
        mass_first=("mass_first", "mean"),
        mass_massive=("mass_massive", "mean"),
        mass_sink=("mass_sink", "mean"),
        mass_other=("mass_other", "mean"),
        sink_1_share=("sink", "mean"),
        n_sink_heads=("sink", "sum"),
        max_head_mass_first=("mass_first", "max"),
    )
    out["massive_in_input"] = out["layer"] > emerge if emerge is not None else False  # block L reads block L-1's output
    if layer_stats is not None:
        agg = layer_stats.groupby("layer")[["top1_abs", "median_abs"]].mean()
        out["top1_over_median"] = out["layer"].map(agg["top1_abs"] / agg["median_abs"])
        for layer, v in zip(out["layer"], out["top1_over_median"]):
            if not pd.isna(v):  # NaN: a layer the capture did not cover
                check_finite(float(v), f"attention: top-1 |a| / median |a| of block {layer}")
    return out


def concentration_layer(layers: pd.DataFrame, threshold: float) -> int | None:
    """The first layer whose head-mean attention on the massive tokens is above `threshold` (None: none).

    >>> concentration_layer(layer_table(heads, emerge, None), threshold=0.5)
    2
    """
    above = layers.loc[layers["mass_massive"] > threshold, "layer"]
    return int(above.iloc[0]) if len(above) else None


def decomposition(rec: Recorder) -> pd.DataFrame:
    """Per (layer, head, part in massive|other|random): how constant the part is across sequences
    at the same query position: rel_std (RMS deviation from the mean / RMS norm of the mean),
    cos_to_mean, norm (mean |part|), n_sequences.

        >>> decomposition(rec).groupby("part")["rel_std"].median()   # massive << random for a sink
    """
    rows = []
    for (name, layer), chunks in sorted(rec.samples.items(), key=lambda kv: (kv[0][1], PARTS.index(kv[0][0]))):
        x = torch.cat(chunks).double()  # [sequences, heads, queries, d]
        mean = x.mean(0, keepdim=True)
        dev = (x - mean).pow(2).sum(-1).mean(dim=(0, 2)).sqrt()  # RMS over sequences and queries: [heads]
        scale = mean.pow(2).sum(-1).mean(dim=(0, 2)).sqrt()
        cos = torch.nn.functional.cosine_similarity(x, mean.expand_as(x), dim=-1).mean(dim=(0, 2))
        norm = x.norm(dim=-1).mean(dim=(0, 2))
        for h in range(x.shape[1]):
            if not scale[h] > 0 and rec.hidden.get((name, layer)):
                rec.notes[layer] = (
                    f"layer {layer}: the mask (a sliding window) hides the {name} tokens from every sampled "
                    "query (second half of the sequence): no decomposition rows there"
                )
                continue
            if not scale[h] > 0:
                raise NonFiniteError(
                    f"attention: the {name} tokens' part of layer {layer} head {h} is zero in every "
                    f"calibration sequence, so its rel_std is undefined (no {name} token among them?)"
                )
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "part": name,
                    "norm": float(norm[h]),
                    "rel_std": float(dev[h] / scale[h]),
                    "cos_to_mean": float(cos[h]),
                    "n_sequences": x.shape[0],
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the intervention's batches
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


# ---------------------------------------------------------------- the whole analysis
@dataclass
class AttentionResult:
    """What `analyse` measured on the calibration sequences.

    heads, layers, decomposition: the tables of head_table, layer_table, decomposition;
    concentration: concentration_layer; random_positions: the control's positions; summary: the
    headline numbers (JSON-ready); recorder: holds the calibrated means the interventions use."""

    heads: pd.DataFrame
    layers: pd.DataFrame
    decomposition: pd.DataFrame
    emerge: int | None
    concentration: int | None
    random_positions: list[int]
    summary: dict
    recorder: Recorder = field(repr=False)


def _medians(decomp: pd.DataFrame) -> dict:
    if not len(decomp):
        return {}
    return {p: r.to_dict() for p, r in decomp.groupby("part")[["rel_std", "cos_to_mean"]].median().iterrows()}


def summarise(
    heads: pd.DataFrame,
    layers: pd.DataFrame,
    decomp: pd.DataFrame,
    emerge: int | None,
    concentration: int | None,
    random_positions: list[int],
    explicit_sink: bool = False,
    skipped: dict | None = None,
    notes: list | None = None,
) -> dict:
    """The headline numbers: emerge and concentration layers, Sink_1 share and attention on the
    first token (overall and where the layer's input holds massive activations), decomposition medians.

        >>> summarise(res.heads, res.layers, res.decomposition, 1, 2, [11])["sink_1_share"]
    """
    after = layers[layers["massive_in_input"]] if emerge is not None else layers
    return {
        "emerge_layer": emerge,
        "concentration_layer": concentration,
        "sink_1_share": float(heads["sink"].mean()),
        "sink_1_share_massive_in_input": float(after["sink_1_share"].mean()) if len(after) else None,
        "mass_first_mean": float(layers["mass_first"].mean()),
        "mass_first_massive_in_input": float(after["mass_first"].mean()) if len(after) else None,
        "explicit_sink": bool(
            explicit_sink
        ),  # a learned sink logit per head (gpt-oss `sinks`): its share beside the first token's
        "mass_sink_mean": float(layers["mass_sink"].mean()) if explicit_sink else None,
        "mass_sink_massive_in_input": float(after["mass_sink"].mean()) if explicit_sink and len(after) else None,
        "skipped_layers": {int(k): v for k, v in (skipped or {}).items()},
        "notes": list(notes or []),
        "random_positions": list(random_positions),
        "decomposition_median": _medians(decomp),
        "decomposition_median_massive_in_input": _medians(decomp[decomp["layer"].isin(after["layer"])])
        if len(decomp)
        else {},
    }


def analyse(
    model: torch.nn.Module,
    ids: torch.Tensor,
    massive_tokens: torch.Tensor | pd.DataFrame,
    emerge: int | None = None,
    layer_stats: pd.DataFrame | None = None,
    seq_ids: list[int] | None = None,
    sink_threshold: float = 0.3,
    concentrate_threshold: float = 0.5,
    sample_queries: int = 32,
    seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    desc: str = "attention",
) -> AttentionResult:
    """Record attention on the calibration sequences `ids` [n, seq] and measure sinks and the
    decomposition. `massive_tokens`: [n, seq] bool, or detect's massive table (seq_id, position;
    `seq_ids` name the rows of `ids`, 0..n-1 by default). `emerge`: the first block whose output
    holds massive activations (None: none). `layer_stats`: capture's table, for top1_over_median.
    The model is switched to the recording attention (its outputs stay eager's); the inputs go
    to `device` (None: the device of the model's parameters).

        >>> res = analyse(model, ids, found.massive, emerge=found.emerge_layer, seed=1)
        >>> res.summary["concentration_layer"], res.summary["sink_1_share"]
        (2, 0.95)
    """
    use_recording_attention(model)
    device = device or _device(model)
    if isinstance(massive_tokens, pd.DataFrame):
        massive_tokens = calibration_tokens(
            massive_tokens, list(seq_ids if seq_ids is not None else range(len(ids))), ids.shape[1]
        )
    if tuple(massive_tokens.shape) != tuple(ids.shape):
        raise MassiveError(f"massive_tokens has shape {tuple(massive_tokens.shape)}, the sequences {tuple(ids.shape)}")
    if not massive_tokens.any():
        raise MassiveError("no massive token in any calibration sequence (mark the first token where none is detected)")
    rec = Recorder(model, sample_queries)
    random_pos = random_tokens(massive_tokens, seed)
    random = at(random_pos, len(ids), ids.shape[1], massive_tokens)
    with torch.inference_mode(), rec.active("record"):
        for start in tqdm(range(0, len(ids), batch_size), desc=desc, unit=" batch"):
            rec.massive = massive_tokens[start : start + batch_size].to(device)
            rec.random = random[start : start + batch_size].to(device)
            model(ids[start : start + batch_size].to(device), use_cache=False)
    rec.finish_means()
    heads = head_table(rec, sink_threshold)
    layers = layer_table(heads, emerge, layer_stats)
    concentration = concentration_layer(layers, concentrate_threshold)
    decomp = decomposition(rec)
    positions = random_pos.tolist()
    return AttentionResult(
        heads=heads,
        layers=layers,
        decomposition=decomp,
        emerge=emerge,
        concentration=concentration,
        random_positions=positions,
        recorder=rec,
        summary=summarise(
            heads,
            layers,
            decomp,
            emerge,
            concentration,
            positions,
            explicit_sink=rec.explicit_sink,
            skipped=rec.skipped(),
            notes=[rec.notes[k] for k in sorted(rec.notes)],
        ),
    )


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
    device = device or _device(model)
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


# ---------------------------------------------------------------- a prompt's logits (the heatmaps)
def heatmap_layers(emerge: int | None, n_layers: int, layers: list[int] | None = None) -> list[int]:
    """The layers of the logit heatmaps: `layers` (checked), or the layer before massive
    activations reach the input, the first that reads them, and one between it and the last.

        >>> heatmap_layers(emerge=1, n_layers=4)
        [1, 2]
    """
    if layers is not None:
        picks = list(layers)
        bad = [x for x in picks if not 0 <= x < n_layers]
        if bad:
            raise MassiveError(f"attention.heatmap_layers: layer {bad[0]} is outside 0..{n_layers - 1}")
        return picks
    if emerge is None:
        picks = [0, n_layers // 2, n_layers - 1]
    else:  # block `emerge` still reads no massive activation; block emerge + 1 is the first to
        first = min(emerge + 1, n_layers - 1)
        picks = [emerge, first, (first + n_layers - 1) // 2]
    return sorted(set(picks))


def prompt_logits(
    model: torch.nn.Module, ids: torch.Tensor, device: torch.device | str | None = None
) -> dict[int, dict[str, torch.Tensor]]:
    """Every layer's attention logits for one prompt ([1, tokens]): {layer: {"logits": [1, heads,
    q, k] float32 on the CPU, -inf where masked}}, the input of massive.plots.figures.heatmaps.

        >>> kept = prompt_logits(model, massive.encode_prompt(tok, "Summer is warm. Winter is cold."))
        >>> fig = plots.heatmaps(kept, [1, 2], tokens, emerge=1, title="m")
    """
    use_recording_attention(model)
    rec = Recorder(model)
    with torch.inference_mode(), rec.active("off", keep=True):
        model(ids.to(device or _device(model)), use_cache=False)
    return {layer: {"logits": v["logits"].cpu()} for layer, v in rec.kept.items()}
