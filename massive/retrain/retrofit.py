"""Retrofit an explicit attention bias to a pretrained decoder whose massive activations are ablated.

The paper (Sec. 4-5) reads massive activations as an implicit attention bias: the sink token
absorbs softmax weight ("mass") and adds a nearly constant vector to every attention output
("value"). If that is what they are for, a model that has lost them should recover when it is
given an explicit bias and only that bias is trained. Each variant here tests one part:

  attn_bias         a learned key k' and value v' per (layer, head), prepended to K and V (the
                    paper's formula): mass and value. The slot's logit is q.k' * scale + offset,
                    the offset starts at `init_logit` (very negative) and v' at 0, so the slot
                    starts with near-zero weight and a zero value.
  sink_logit        one learned logit per (layer, head) in the softmax denominator, no value
                    (gpt-oss's `sinks`): mass only. Starts at `init_logit`.
  value_bias        a learned vector per (layer, head) added to the head's output: value only.
  softmax_plus_one  a logit fixed at 0 in the denominator, no parameters (Miller's softmax1).
  gate              a per-head sigmoid gate on the head's output, from the attention's input
                    (Qiu et al. 2025: sigmoid(x.w + b)), initialised open (w = 0, b = -init_logit).
  mlp_bias          the control, parameter-matched to value_bias (d_model per layer): a learned
                    vector added to each block's MLP output. No attention change at all.

The model's own weights stay frozen and untouched: the variants run through an attention
function registered with transformers' AttentionInterface ("massive_retrofit") that takes the
queries, keys and values the family's attention module computed (after rotary embeddings), and
through a hook on the MLP output for the control. Outside `applied(...)` the model is its own.

    >>> rf = Retrofit(model.config, "attn_bias")
    >>> ablate = lambda: massive.intervene(model, found, "zero", layers="from_emerge")
    >>> fit(model, rf, train_chunks, RetrofitConfig(steps=40), ablation=ablate)
    >>> with applied(model, rf), ablate():
    ...     nll = massive.chunk_nll(model, eval_chunks)
"""

from __future__ import annotations

import math
import sys
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from massive.core import arch, hooks
from massive.core.arch import repeat_kv
from massive.core.errors import MassiveError, check_finite
from massive.intervene.comparison import Interval
from massive.retrain.retrofit_config import (  # noqa: F401 - the config and its names, also importable from here
    CONTROLS,
    EXTRA_SLOT,
    VARIANTS,
    RetrofitConfig,
)

IMPLEMENTATION = "massive_retrofit"


def _heads(config) -> tuple[int, int, int, int]:
    """(layers, heads, head dim, d_model) of a decoder config."""
    layers, d_model = arch.num_layers(config), arch.hidden_size(config)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    if not heads:
        raise MassiveError(f"retrofit: cannot tell the number of heads of model_type={config.model_type!r}")
    d_head = getattr(config, "head_dim", None) or d_model // heads
    return layers, int(heads), int(d_head), d_model


class Retrofit(nn.Module):
    """The new parameters of one variant, for every layer and head of a model with `config`."""

    def __init__(self, config, variant: str, init_logit: float = -14.0, seed: int = 1):
        super().__init__()
        if variant not in VARIANTS:
            raise MassiveError(f"unknown retrofit variant {variant!r} (known: {', '.join(VARIANTS)})")
        self.variant = variant
        L, H, dh, d = _heads(config)
        self.shape = (L, H, dh, d)
        g = torch.Generator().manual_seed(seed)
        if variant == "attn_bias":
            # k' small and random (so q.k' can learn a direction at once), v' zero, the offset closed
            self.key = nn.Parameter(torch.randn(L, H, dh, generator=g) * dh**-0.5 * 1e-2)
            self.value = nn.Parameter(torch.zeros(L, H, dh))
            self.logit = nn.Parameter(torch.full((L, H), float(init_logit)))
        elif variant == "sink_logit":
            self.logit = nn.Parameter(torch.full((L, H), float(init_logit)))
        elif variant == "value_bias":
            self.value = nn.Parameter(torch.zeros(L, H, dh))
        elif variant == "gate":
            self.gate_w = nn.Parameter(torch.zeros(L, H, d))
            self.logit = nn.Parameter(torch.full((L, H), -float(init_logit)))
        elif variant == "mlp_bias":
            self.mlp = nn.Parameter(torch.zeros(L, d))
        self.attn_inputs: dict[int, torch.Tensor] = {}  # gate: layer -> the attention's input of this pass
        self.observing = False
        self.shares: dict[int, list[torch.Tensor]] = {}  # layer -> [first-token share, slot share] sums

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def groups(self, lr: float, logit_lr: float) -> list[dict]:
        """AdamW parameter groups: the scalar logits at `logit_lr`, the vectors at `lr`."""
        logits = [p for n, p in self.named_parameters() if n == "logit"]
        rest = [p for n, p in self.named_parameters() if n != "logit"]
        return [g for g in ({"params": rest, "lr": lr}, {"params": logits, "lr": logit_lr}) if g["params"]]

    # ------------------------------------------------------------ the attention with the new slot
    def attention(self, layer: int, module, query, key, value, attention_mask, scaling=None, **kwargs):
        """Eager attention of one layer with this variant's change; returns (out [b, q, h, d], probs)."""
        if kwargs.get("softcap") or getattr(module, "sinks", None) is not None:
            raise MassiveError(
                f"retrofit: {type(module).__name__} uses logit soft-capping or learned sinks, "
                "which the retrofit attention does not reproduce"
            )
        groups = query.shape[1] // key.shape[1]
        k, v = repeat_kv(key, groups), repeat_kv(value, groups)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        logits = torch.matmul(query, k.transpose(2, 3)) * scale
        if attention_mask is not None:
            logits = logits + attention_mask[:, :, :, : k.shape[-2]]
        t = k.shape[-2]
        if self.variant in EXTRA_SLOT:
            if self.variant == "attn_bias":
                kk = self.key[layer].to(query.dtype)  # [h, d]
                extra = (
                    torch.einsum("bhqd,hd->bhq", query, kk) * scale + self.logit[layer].to(query.dtype)[None, :, None]
                )
            elif self.variant == "sink_logit":
                extra = self.logit[layer].to(query.dtype)[None, :, None].expand(query.shape[0], -1, query.shape[2])
            else:
                extra = query.new_zeros(query.shape[:3])
            logits = torch.cat([logits, extra[..., None]], dim=-1)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(probs[..., :t], v)
        if self.variant == "attn_bias":
            out = out + probs[..., t:] * self.value[layer].to(out.dtype)[None, :, None, :]
        elif self.variant == "value_bias":
            out = out + self.value[layer].to(out.dtype)[None, :, None, :]
        elif self.variant == "gate":
            x = self.attn_inputs.get(layer)
            if x is None:
                raise MassiveError(f"retrofit gate: no attention input recorded at layer {layer}")
            gate = torch.sigmoid(
                torch.einsum("bqd,hd->bhq", x.to(out.dtype), self.gate_w[layer].to(out.dtype))
                + self.logit[layer].to(out.dtype)[None, :, None]
            )
            out = out * gate[..., None]
        if self.observing:
            self._observe(layer, probs.detach(), t)
        return out.transpose(1, 2).contiguous(), probs[..., :t]

    def _observe(self, layer: int, probs: torch.Tensor, t: int) -> None:
        """Mean share of the first token and of the extra slot over batch, heads and queries 1.. ."""
        p = probs[:, :, 1:].float()
        first = p[..., 0].mean()
        slot = p[..., t:].sum(-1).mean() if probs.shape[-1] > t else p.new_zeros(())
        acc = self.shares.setdefault(layer, [p.new_zeros(()), p.new_zeros(()), 0])
        acc[0], acc[1], acc[2] = acc[0] + first, acc[1] + slot, acc[2] + 1

    def take_shares(self) -> dict[int, tuple[float, float]]:
        """layer -> (first-token share, slot share), averaged over the passes since the last call."""
        out = {layer: (float(a / n), float(b / n)) for layer, (a, b, n) in sorted(self.shares.items())}
        self.shares = {}
        return out


# ---------------------------------------------------------------- switching it on
_ACTIVE: list[tuple[Retrofit, dict[int, int]]] = []  # (retrofit, id(attention module) -> layer)


def _retrofit_attention(module, query, key, value, attention_mask, **kwargs):
    if not _ACTIVE:
        raise MassiveError("the massive_retrofit attention ran outside retrofit.applied(...)")
    rf, layers = _ACTIVE[-1]
    return rf.attention(layers[id(module)], module, query, key, value, attention_mask, **kwargs)


def register() -> None:
    """Register "massive_retrofit" with transformers (attention function and eager mask); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, _retrofit_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def _layer_map(model: nn.Module) -> dict[int, int]:
    parts = arch.find_parts(model)
    return {id(attn): i for i, attn in enumerate(parts.attentions)}


@contextmanager
def applied(model: nn.Module, rf: Retrofit) -> Iterator[Retrofit]:
    """`model` runs with `rf`'s change for the duration of the block (its attention implementation
    is restored afterwards). The model's weights are not touched."""
    if rf.shape[0] != arch.num_layers(model.config):
        raise MassiveError(f"retrofit made for {rf.shape[0]} layers, the model has {arch.num_layers(model.config)}")
    register()
    before = getattr(model.config, "_attn_implementation", None)
    fns: list[tuple[str, hooks.HookFn]] = []
    if rf.variant == "gate":

        def keep(x: torch.Tensor, name: str) -> None:
            rf.attn_inputs[hooks.layer_of(name)] = x

        fns = [(hooks.attn_in(i), keep) for i in range(rf.shape[0])]
    elif rf.variant == "mlp_bias":

        def add(x: torch.Tensor, name: str) -> torch.Tensor:
            return x + rf.mlp[hooks.layer_of(name)].to(x.dtype)

        fns = [(hooks.mlp_out(i), add) for i in range(rf.shape[0])]
    rf.to(next(model.parameters()).device)
    _ACTIVE.append((rf, _layer_map(model)))
    try:
        model.set_attn_implementation(IMPLEMENTATION)
        with hooks.hooked(model, fns):
            yield rf
    finally:
        _ACTIVE.pop()
        rf.attn_inputs = {}
        if before is not None:
            model.set_attn_implementation(before)


# ---------------------------------------------------------------- training
@dataclass
class Step:
    """One optimizer step: its index and the training loss (mean next-token cross-entropy)."""

    step: int
    loss: float


@dataclass
class State:
    """What a resumable training run keeps: the step reached and the losses so far."""

    step: int = 0
    losses: list[float] = field(default_factory=list)


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def fit(
    model: nn.Module,
    rf: Retrofit,
    chunks: torch.Tensor,
    cfg: RetrofitConfig,
    ablation: Callable[[], ContextManager] | None = None,
    checkpoint: str | Path | None = None,
    on_eval: Callable[[int], None] | None = None,
    progress: bool = True,
    where: str = "retrofit",
    stamp: dict | None = None,
    history: list | None = None,
) -> State:
    """Train `rf`'s parameters (AdamW; the model frozen) for cfg.steps steps on batches of
    `chunks` [n, seq_len] drawn with cfg.seed, with the massive activations ablated where
    `ablation()` says (None: kept). With `checkpoint`, the state is saved after every step that
    calls `on_eval` (every cfg.eval_every steps, and the last) and a rerun resumes from it; the
    checkpoint keeps `stamp` (the settings that make the run: cfg, variant, data) and one made with
    other settings is an error, never a silent resume. `history` (a list the caller appends its
    evaluations to) is saved with it and restored on resume. A non-finite loss is a NonFiniteError naming
    `where` and the step."""
    if rf.variant == "softmax_plus_one" or rf.n_params == 0:
        if on_eval is not None:
            on_eval(0)
        return State()
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(rf.groups(cfg.lr, cfg.logit_lr), weight_decay=cfg.weight_decay, eps=cfg.eps)
    g = torch.Generator().manual_seed(cfg.seed)
    state = State()
    path = Path(checkpoint) if checkpoint else None
    stamp = {"config": vars(cfg), "variant": rf.variant, "n_chunks": len(chunks), **(stamp or {})}
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("stamp") != stamp:
            raise MassiveError(
                f"{where}: the checkpoint {path} was made with other settings "
                f"({_differences(saved.get('stamp') or {}, stamp)}): delete it or choose another run name"
            )
        rf.load_state_dict(saved["retrofit"])
        opt.load_state_dict(saved["optimizer"])
        g.set_state(saved["generator"])
        state = State(saved["step"], list(saved["losses"]))
        if history is not None:
            history[:] = saved.get("history", [])
    elif on_eval is not None:
        on_eval(0)
    try:
        bar = tqdm(range(state.step, cfg.steps), desc=f"{where} {rf.variant}", disable=not progress, file=sys.stderr)
        for step in bar:
            batch = chunks[torch.randint(0, len(chunks), (cfg.batch_size,), generator=g)].to(device)
            with applied(model, rf), ablation() if ablation else nullcontext():
                loss = _loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            value = float(loss.detach())
            check_finite(value, f"{where}: the training loss of {rf.variant} at step {step + 1}")
            opt.step()
            state.step, state.losses = step + 1, [*state.losses, value]
            bar.set_postfix(loss=f"{value:.3f}")
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                if on_eval is not None:
                    on_eval(state.step)
                if path is not None:
                    tmp = path.with_suffix(".tmp")
                    torch.save(
                        {
                            "retrofit": rf.state_dict(),
                            "optimizer": opt.state_dict(),
                            "generator": g.get_state(),
                            "step": state.step,
                            "losses": state.losses,
                            "stamp": stamp,
                            "history": list(history or []),
                        },
                        tmp,
                    )
                    tmp.replace(path)
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    return state


def _differences(old: dict, new: dict) -> str:
    flat = lambda d, pre="": {
        k2: v2
        for k, v in d.items()
        for k2, v2 in (flat(v, f"{pre}{k}.").items() if isinstance(v, dict) else [(f"{pre}{k}", v)])
    }  # noqa: E731
    a, b = flat(old), flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in keys[:3]) or "unreadable settings"


@torch.no_grad()
def first_token_norms(
    model: nn.Module,
    ids: torch.Tensor,
    rf: Retrofit | None = None,
    ablation: Callable[[], ContextManager] | None = None,
) -> dict[int, float]:
    """layer -> the mean L2 norm of the first token's hidden state after that block."""
    norms: dict[int, float] = {}

    def see(h: torch.Tensor, name: str) -> None:
        norms[hooks.layer_of(name)] = float(h[:, 0].float().norm(dim=-1).mean())

    n = arch.num_layers(model.config)
    with ExitStack() as stack:
        if rf is not None:
            stack.enter_context(applied(model, rf))
        if ablation is not None:
            stack.enter_context(ablation())
        stack.enter_context(hooks.hooked(model, [(hooks.resid_post(i), see) for i in range(n)]))
        model(input_ids=ids.to(next(model.parameters()).device))
    for layer, v in norms.items():
        if not math.isfinite(v):
            raise MassiveError(f"retrofit: the first token's norm after block {layer} is {v}")
    return norms


@dataclass
class Evaluation:
    """A model (with or without a retrofit, ablated or not) on held-out chunks: the per-chunk mean
    NLL (float64 [n]), and per layer the attention share of the first token and of the extra slot
    (the k'/v' slot, the learned sink, or the +1), over queries 1.. , and the first token's norm."""

    nll: np.ndarray
    shares: dict[int, tuple[float, float]]
    norms: dict[int, float]


def neutral(config) -> Retrofit:
    """A retrofit that changes nothing (a learned sink at -inf): reads the intact model's attention."""
    rf = Retrofit(config, "sink_logit")
    with torch.no_grad():
        rf.logit.fill_(float("-inf"))
    return rf


def evaluate(
    model: nn.Module,
    rf: Retrofit | None,
    chunks: torch.Tensor,
    ablation: Callable[[], ContextManager] | None,
    batch_size: int = 4,
    where: str = "retrofit",
) -> Evaluation:
    """Per-chunk NLL, attention shares and first-token norms of `model` with `rf` (None: the model
    as it is) under `ablation()` (None: the massive activations kept)."""
    from massive.measure.perplexity import chunk_nll

    rf = neutral(model.config) if rf is None else rf
    with applied(model, rf), ablation() if ablation else nullcontext():
        rf.observing, rf.shares = True, {}
        try:
            nll = chunk_nll(model, chunks, batch_size, where=where)
        finally:
            rf.observing = False
        shares = rf.take_shares()
    norms = first_token_norms(model, chunks[:batch_size], rf, ablation)
    return Evaluation(nll, shares, norms)


# ---------------------------------------------------------------- one arm, start to end
@dataclass
class Arm:
    """One arm of the experiment: the perplexity ratio to the intact model at each evaluation step
    (`curve`: step, perplexity, ratio_to_intact, ratio_lo, ratio_hi, train_loss), the last
    evaluation (`final`), the ratio with the massive activations set back and the bias kept
    (`set_back`), and the trained parameter count."""

    name: str
    variant: str
    ablated: bool
    params: int
    curve: list[dict]
    final: Evaluation
    set_back: Interval


def run_arm(
    model: nn.Module,
    name: str,
    variant: str | None,
    ablation: Callable[[], ContextManager] | None,
    train: torch.Tensor,
    held: torch.Tensor,
    intact: Evaluation,
    cfg: RetrofitConfig,
    resamples: int = 1000,
    checkpoint: str | Path | None = None,
    stamp: dict | None = None,
    where: str = "retrofit",
    progress: bool = True,
) -> Arm:
    """Train `variant` (None: no retrofit, evaluated once) under `ablation` and evaluate it on the
    held-out chunks every cfg.eval_every steps against `intact` (paired bootstrap, `resamples`)."""
    from massive.intervene.comparison import ratio_interval

    rf = Retrofit(model.config, variant, init_logit=cfg.init_logit, seed=cfg.seed) if variant else None
    curve, last = [], {}

    def on_eval(step: int) -> None:
        ev = evaluate(model, rf, held, ablation, cfg.batch_size, where=f"{where}: arm {name!r} at step {step}")
        ci = ratio_interval(ev.nll, intact.nll, resamples, cfg.seed, where=f"{where}: arm {name!r}")
        curve.append(
            {
                "step": step,
                "perplexity": ci.perplexity,
                "ratio_to_intact": ci.ratio,
                "ratio_lo": ci.ratio_lo,
                "ratio_hi": ci.ratio_hi,
            }
        )
        last["ev"] = ev

    losses: list[float] = []
    if rf is None:
        on_eval(0)
    else:
        state = fit(
            model,
            rf,
            train,
            cfg,
            ablation=ablation,
            checkpoint=checkpoint,
            on_eval=on_eval,
            progress=progress,
            where=where,
            stamp=stamp,
            history=curve,
        )
        losses = state.losses
        if "ev" not in last:  # resumed after its last evaluation (kept in the curve): the final state's details
            last["ev"] = evaluate(
                model, rf, held, ablation, cfg.batch_size, where=f"{where}: arm {name!r} at step {state.step}"
            )
    for row in curve:
        row["train_loss"] = losses[row["step"] - 1] if 0 < row["step"] <= len(losses) else float("nan")
    back = evaluate(model, rf, held, None, cfg.batch_size, where=f"{where}: arm {name!r}, massive set back")
    set_back = ratio_interval(back.nll, intact.nll, resamples, cfg.seed, where=f"{where}: arm {name!r} set back")
    return Arm(name, variant or "none", ablation is not None, rf.n_params if rf else 0, curve, last["ev"], set_back)


# ---------------------------------------------------------------- what the arms say
MASS_ONLY, VALUE_ONLY, BOTH = ("sink_logit", "softmax_plus_one"), ("value_bias",), ("attn_bias",)


def _x(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.2f}x"


def reading(summary: pd.DataFrame, layers: pd.DataFrame | None = None, factor: float = 10.0) -> str:
    """One paragraph on what the arms of a retrofit run support (summary: rule retrofit's
    summary.parquet; layers: its layers.parquet, to tell whether attn_bias's slot ever opened).
    Recovery is read on the log scale: an arm recovers log(ratio of none) - log(its ratio); one reading
    is called "far more" than another when its remaining ratio is `factor` times smaller. With several
    seeds (a `seed` column), an arm's ratio is its median over the seeds, shown with their range."""
    ablated = summary[summary["massive"] == "ablated"]
    seeds = sorted(set(ablated["seed"])) if "seed" in ablated.columns else []
    if len(seeds) > 1:
        by = ablated.groupby("arm", sort=False)
        rows = by.agg(
            ratio_to_intact=("ratio_to_intact", "median"),
            ratio_lo=("ratio_to_intact", "min"),
            ratio_hi=("ratio_to_intact", "max"),
            params=("params", "first"),
            step=("step", "first"),
        )
        spread = f"range over seeds {', '.join(map(str, seeds))}"
    else:
        rows, spread = ablated.set_index("arm"), "bootstrap interval over held-out chunks"
    if "none" not in rows.index or len(rows) < 2:
        return "No trained arm under the ablation: nothing to read."
    base = float(rows.loc["none", "ratio_to_intact"])
    parts = [
        f"Zeroing the massive activations from their emergence block multiplies the held-out perplexity by "
        f"{base:,.0f}" + (f" (median of {len(seeds)} seeds)." if len(seeds) > 1 else ".")
    ]
    for arm, r in rows.drop(index="none").iterrows():
        parts.append(
            f"{arm} ({int(r['params']):,} parameters, {int(r['step'])} steps) leaves {_x(r['ratio_to_intact'])} "
            f"[{_x(r['ratio_lo'])}, {_x(r['ratio_hi'])}]."
        )
    parts.append(f"(Brackets: the {spread}.)")
    best = lambda names: min((float(rows.loc[n, "ratio_to_intact"]) for n in names if n in rows.index), default=None)  # noqa: E731
    mass, value, both = best(MASS_ONLY), best(VALUE_ONLY), best(BOTH)
    if value is not None and mass is not None:
        if value * factor <= mass:
            parts.append(
                "Value alone recovers far more than mass alone: here the massive activations act mainly as a "
                "constant value offset to attention outputs."
            )
        elif mass * factor <= value:
            parts.append(
                "Mass alone recovers far more than value alone: the attention-sink reading (the sink absorbs "
                "softmax weight) is supported here."
            )
        else:
            parts.append("Mass alone and value alone recover comparably.")
    if "mlp_bias" in rows.index and value is not None:
        control = float(rows.loc["mlp_bias", "ratio_to_intact"])
        parts.append(
            f"The parameter-matched control (mlp_bias) leaves {_x(control)}: "
            + (
                "value_bias does better, so where the bias enters matters."
                if value < control
                else "as good as value_bias, so a bias anywhere in the residual stream does as well."
            )
        )
    if both is not None and layers is not None and "attn_bias" in set(layers["arm"]):
        opened = float(layers[layers["arm"] == "attn_bias"]["slot_share"].max())
        if opened < 0.01:
            parts.append(
                f"attn_bias's slot stayed closed (at most {opened:.3f} of the attention): its result says "
                "nothing about mass and value together yet; train longer or raise retrofit.logit_lr."
            )
    return " ".join(parts)
