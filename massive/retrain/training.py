"""Train a GPT variant from scratch and watch massive activations emerge (Sun et al. 2024, section 5).

The paper retrains GPT-2 with an explicit attention bias and finds that the massive activations
disappear: with a place for attention to rest, no token needs a huge hidden state to act as the
attention sink. This module trains the variants of `massive.retrain.gpt` (nanoGPT's train.py,
reorganised): AdamW with linear warmup and a cosine (or constant) learning rate, gradient
accumulation, autocast on GPUs, DDP under torchrun. Every `eval_interval` steps it estimates the
train and validation loss and measures, on a FIXED probe batch (`emergence`):
  - per layer, the residual stream after the block (`blocks.{L}.hook_resid_post`): top-1 |a| and
    median |a| per sequence (averaged over sequences, as the paper), and the largest |a| at the
    first position and at the data's start token;
  - per layer and head, the mean attention that later queries (positions >= 1) pay to the first
    position; a head is a sink head when it exceeds `sink_threshold` (Sink_1, Gu et al. 2024).
    For the bias variants the attention on the bias slot is reported beside it (slot_attn).
The first position of the residual stream is the learned sink for `sink_token` and the data's
start token otherwise.

Batches are a function of (seed, split, index), never of a stream position, and a checkpoint
holds the model, the optimizer, the RNG states and the metric rows: a run resumed from it gives
the same next-step losses, bit for bit.

    >>> from massive.retrain import training
    >>> from massive.retrain.backcopy import BackcopySpec
    >>> from massive.retrain.gpt import GPTConfig
    >>> spec = training.TrainSpec(batch_size=8, block_size=16, max_iters=20, warmup_iters=2, eval_interval=10, eval_iters=2)
    >>> model, optimizer = training.build(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32,
    ...                                             variant="attn_bias"), spec, seed=1)
    >>> data = training.BackcopyBatches(BackcopySpec(), seed=1)
    >>> probe, _ = data.batch("probe", 0, 4, 16)
    >>> state = training.train(model, optimizer, data, spec, probe)
    >>> [(r["step"], r["layer"], round(r["slot_attn"], 2)) for r in state["rows"]][-2:]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from massive.core import hooks
from massive.core.arch import DTYPES
from massive.core.errors import MassiveError, check_finite
from massive.core.files import atomic_path
from massive.measure.detect import MIN_ABS, MIN_RATIO
from massive.retrain.backcopy import Backcopy, BackcopySpec
from massive.retrain.gpt import DECAY, GPT, GPTConfig

log = logging.getLogger(__name__)


@dataclass
class TrainSpec:
    """The optimisation and evaluation hyper-parameters (the pipeline's train.* config).

    >>> TrainSpec(lr=1e-2, schedule="constant", max_iters=2000).warmup_iters
    100
    """

    batch_size: int = 64  # sequences per micro-batch (per GPU)
    block_size: int = 1024  # tokens per sequence (the model's block_size)
    grad_accum: int = 1  # micro-batches per step, over all GPUs together
    max_iters: int = 3000
    lr: float = 3e-3
    min_lr: float = 3e-4  # end of the cosine decay
    schedule: str = "constant"  # after the linear warmup: "constant" or "cosine" (decay to min_lr at max_iters)
    warmup_iters: int = 100
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    decay: str = "matrices"  # which parameters decay: "matrices", "all", "none" (GPT.optimizer_groups)
    optimizer: str = "adamw"  # "adamw" (betas beta1, beta2) or "sgd" (with `momentum`; weight decay as L2)
    momentum: float = 0.9  # SGD only
    grad_clip: float = 1.0  # 0: off
    log_interval: int = 50  # steps between loss log points
    eval_interval: int = 250  # steps between evaluations and emergence metrics
    eval_iters: int = 10  # batches per loss estimate
    checkpoint_interval: int = 500  # steps between checkpoints (also written at the end)
    sink_threshold: float = 0.3  # Gu et al. 2024: Sink_1 threshold of first-token attention

    def __post_init__(self):
        for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("decay", DECAY)):
            value = getattr(getattr(self, key), "value", getattr(self, key))  # accept the config's Enum
            setattr(self, key, value)
            if value not in allowed:
                raise MassiveError(f"{key}={value!r} is not one of {', '.join(allowed)}")


OPTIMIZERS = ("adamw", "sgd")  # TrainSpec.optimizer: AdamW (betas beta1, beta2); SGD with momentum, decay as L2
SCHEDULES = ("constant", "cosine")  # TrainSpec.schedule: after the linear warmup, constant or cosine decay to min_lr


# ---------------------------------------------------------------- data
class BackcopyBatches:
    """Bigram-Backcopy batches; micro-batch `index` of a split is its own seeded sample.

    >>> x, y = BackcopyBatches(BackcopySpec(), seed=1).batch("train", 0, batch_size=8, block_size=16)
    >>> x.shape
    torch.Size([8, 16])
    """

    def __init__(self, spec: BackcopySpec, seed: int):
        self.task = Backcopy(spec)
        self.seed = seed

    def batch(self, split: str, index: int, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.batch(split, index, batch_size, block_size, seed=self.seed)


class OpenWebTextBatches:
    """OpenWebText tokenised once (GPT-2 BPE, EOT between documents) into uint16 memmaps in `directory`.

    Rank 0 prepares {train,val}.bin from the `datasets` hub copy; other ranks wait for the marker
    file. A batch draws random windows seeded by (seed, split, index).

        >>> data = OpenWebTextBatches("cache/train/openwebtext", seed=1)  # doctest: +SKIP
        >>> x, y = data.batch("val", 0, batch_size=12, block_size=1024)  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | Path,
        seed: int,
        hub_id: str = "Skylion007/openwebtext",
        tokenizer: str = "openai-community/gpt2",
        val_fraction: float = 0.0005,
        num_proc: int = 8,
        rank: int = 0,
    ):
        self.dir, self.seed = Path(directory), seed
        self.hub_id, self.tokenizer, self.val_fraction, self.num_proc = hub_id, tokenizer, val_fraction, num_proc
        marker = self.dir / "prepared"
        if not marker.exists():
            if rank == 0:
                self.prepare()
                marker.write_text("ok\n")
            while not marker.exists():
                time.sleep(10)

    def prepare(self) -> None:
        from datasets import load_dataset
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.tokenizer)
        eot = tok.eos_token_id
        ds = load_dataset(self.hub_id, num_proc=self.num_proc)["train"]
        parts = ds.train_test_split(test_size=self.val_fraction, seed=2357, shuffle=True)

        def encode(example):
            ids = tok(example["text"], add_special_tokens=False)["input_ids"] + [eot]
            return {"ids": ids, "len": len(ids)}

        self.dir.mkdir(parents=True, exist_ok=True)
        for split, part in (("train", parts["train"]), ("val", parts["test"])):
            part = part.map(encode, remove_columns=["text"], num_proc=self.num_proc, desc=f"tokenise {split}")
            total = int(np.sum(part["len"], dtype=np.uint64))
            with atomic_path(self.dir / f"{split}.bin") as tmp:
                arr = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(total,))
                at, shards = 0, 1024
                for i in range(shards):
                    chunk = np.concatenate(
                        part.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")["ids"]
                    )
                    arr[at : at + len(chunk)] = chunk
                    at += len(chunk)
                arr.flush()
                del arr

    def batch(self, split: str, index: int, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.memmap(self.dir / ("val.bin" if split == "val" else "train.bin"), dtype=np.uint16, mode="r")
        salt = {"train": 0, "val": 1, "probe": 2}[split]
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + salt) * 1_000_003 + index) % (2**63))
        ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=g).tolist()
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y


# ---------------------------------------------------------------- model, optimizer, precision
def build(
    config: GPTConfig, spec: TrainSpec, seed: int, device: torch.device | str = "cpu"
) -> tuple[GPT, torch.optim.Optimizer]:
    """The model (initialised after `torch.manual_seed(seed)`) and its optimizer: AdamW or SGD with
    momentum (`spec.optimizer`), weight decay on the parameters `spec.decay` names.

        >>> model, optimizer = build(GPTConfig(n_layer=2, n_embd=64, n_head=2, block_size=16), TrainSpec(), seed=1)
        >>> type(build(GPTConfig(n_layer=1, n_embd=32, n_head=2, block_size=8), TrainSpec(optimizer="sgd"), 1)[1]).__name__
        'SGD'
    """
    torch.manual_seed(seed)
    model = GPT(config).to(device)
    groups = model.optimizer_groups(spec.weight_decay, spec.decay)
    if spec.optimizer == "sgd":
        return model, torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum)
    fused = torch.device(device).type == "cuda"
    return model, torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), fused=fused)


def precision(device: torch.device, dtype: str = "float32") -> tuple[Callable, "torch.amp.GradScaler | None"]:
    """(autocast context factory, gradient scaler or None) for training in `dtype` on `device`.

    Autocast only on GPUs and below float32; a GradScaler for float16. On GPUs it also allows TF32.

        >>> autocast, scaler = precision(torch.device("cpu"), "bfloat16")   # CPU: plain float32
        >>> scaler is None
        True
    """
    dt = DTYPES[dtype]
    use_amp = device.type == "cuda" and dt != torch.float32
    autocast = (lambda: torch.autocast("cuda", dtype=dt)) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and dt == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return autocast, scaler


def distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world) under torchrun (its environment variables), else (0, 0, 1)."""
    if int(os.environ.get("RANK", -1)) < 0:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def init_device(name: str = "auto", local_rank: int = 0, world: int = 1) -> torch.device:
    """The training device. Under torchrun (world > 1): start the NCCL process group and take GPU
    `local_rank`. Otherwise `name`, where "auto" is CUDA when available, else the CPU.

        >>> init_device("cpu")
        device(type='cpu')
    """
    if world > 1:
        from torch.distributed import init_process_group

        init_process_group(backend="nccl")
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------- one step
def lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warmup to spec.lr, then constant or cosine decay to spec.min_lr at spec.max_iters.

    >>> lr_at(0, TrainSpec(lr=1e-2, warmup_iters=9))
    0.001
    """
    if step < spec.warmup_iters:
        return spec.lr * (step + 1) / (spec.warmup_iters + 1)
    if spec.schedule == "constant":
        return spec.lr
    progress = min(1.0, (step - spec.warmup_iters) / max(1, spec.max_iters - spec.warmup_iters))
    return spec.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (spec.lr - spec.min_lr)


def train_step(
    model,
    optimizer,
    data,
    step: int,
    spec: TrainSpec,
    device="cpu",
    autocast=contextlib.nullcontext,
    rank: int = 0,
    world: int = 1,
    scaler=None,
) -> float:
    """One optimizer step (all micro-batches of this rank); returns the step's mean loss before the update.

    Micro-batch m of step s on rank r is batch index (s * accum + m) * world + r of the train split.

        >>> loss = train_step(model, optimizer, data, 0, spec)   # doctest: +SKIP
    """
    accum = spec.grad_accum // world
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, spec)
    total = 0.0
    for micro in range(accum):
        x, y = data.batch("train", (step * accum + micro) * world + rank, spec.batch_size, spec.block_size)
        if world > 1:  # synchronise gradients on the last micro-batch only
            model.require_backward_grad_sync = micro == accum - 1
        with autocast():
            loss = model(x.to(device), targets=y.to(device)).loss / accum
        (scaler.scale(loss) if scaler else loss).backward()
        total += loss.item()
    if scaler:
        scaler.unscale_(optimizer)
    if spec.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# ---------------------------------------------------------------- evaluation and emergence metrics
@torch.no_grad()
def estimate_loss(model, data, split: str, spec: TrainSpec, device="cpu", autocast=contextlib.nullcontext) -> float:
    """Mean loss over spec.eval_iters fixed batches of `split` (the same batches at every evaluation;
    the train split's are indices 10**9 + k, apart from the training batches).

        >>> estimate_loss(model, data, "val", spec)   # doctest: +SKIP
        2.81
    """
    was_training = model.training
    model.eval()
    losses = []
    for k in range(spec.eval_iters):
        x, y = data.batch(split, 10**9 + k if split == "train" else k, spec.batch_size, spec.block_size)
        with autocast():
            losses.append(model(x.to(device), targets=y.to(device)).loss.item())
    model.train(was_training)
    return float(np.mean(losses))


@torch.no_grad()
def emergence(model: GPT, x: torch.Tensor, sink_threshold: float = 0.3) -> list[dict]:
    """Per-layer residual-stream, value-state and attention-sink statistics of `model` on the batch `x`.

    One dict per layer (the residual stream after the block, `blocks.{L}.hook_resid_post`):
      top1_abs, median_abs, first_abs, start_abs  means over sequences of the largest |a|, the median
                      |a|, the largest |a| at position 0 and at the data's start token; their ratios
                      to the median (top1_over_median, first_over_median, start_over_median) and
                      start_over_median_sqrt_d = start_over_median / sqrt(n_embd), a width-free measure
                      of how much one entry dominates the (normalised) start-token vector;
      top1_at_first, top1_at_start  share of sequences whose top-1 entry sits there;
      start_norm_ratio  the start token's L2 norm over the median token's L2 norm;
      start_value_norm, value_norm_median, start_value_ratio  the L2 norm of the start token's value
                      state in this block's attention (mean over heads) and the median over tokens
                      ("value drain", Guo et al. 2024: a sink's value state shrinks while its
                      residual state grows);
      first_attn / first_attn_max  mean / max over heads of the attention later queries
                      (positions >= 1) pay to position 0; slot_attn: on the bias slot;
      sink_heads      share of this layer's heads above `sink_threshold`; sink1: Sink_1 over all heads.

        >>> model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, variant="attn_bias"))
        >>> rows = emergence(model, torch.randint(0, 64, (4, 16)), sink_threshold=0.3)
        >>> [r["layer"] for r in rows], 0 <= rows[0]["sink1"] <= 1
        ([0, 1], True)
    """
    c = model.config
    rows: dict[int, dict] = {}

    def keep(layer: int):
        def fn(h: torch.Tensor, _name: str) -> None:
            a = h.detach().float().abs()  # (B, n_prefix + T, C)
            flat = a.flatten(1)
            top1, where = flat.max(dim=1)
            median = flat.median(dim=1).values
            first = a[:, 0].max(dim=1).values
            start = a[:, c.n_prefix].max(dim=1).values
            norms = h.detach().float()[:, c.n_prefix :].norm(dim=-1)  # (B, T): the tokens' L2 norms
            rows[layer] = {
                "top1_abs": top1.mean().item(),
                "median_abs": median.mean().item(),
                "first_abs": first.mean().item(),
                "start_abs": start.mean().item(),
                "top1_at_first": (where // a.shape[-1] == 0).float().mean().item(),
                "top1_at_start": (where // a.shape[-1] == c.n_prefix).float().mean().item(),
                "start_norm_ratio": (norms[:, 0] / norms.median(dim=1).values).mean().item(),
            }

        return fn

    was_training = model.training
    model.eval()
    with hooks.hooked(model, {hooks.resid_post(layer): keep(layer) for layer in range(c.n_layer)}):
        out = model(x, return_attn=True)
    model.train(was_training)
    n_heads = sum(att.shape[1] for att in out.attentions)
    n_sink = 0
    for layer, (att, v) in enumerate(zip(out.attentions, out.values)):  # (B, H, T', n_slot + T'), (B, H, T', hd)
        on_first = att[:, :, 1:, c.n_slot].float().mean(dim=(0, 2))  # per head: later queries -> first position
        on_slot = att[:, :, :, 0].float().mean(dim=(0, 2)) if c.n_slot else torch.zeros_like(on_first)
        sinks = int((on_first > sink_threshold).sum())
        n_sink += sinks
        vnorm = v.float()[:, :, c.n_prefix :].norm(dim=-1).mean(dim=1)  # (B, T): mean over heads
        start_v, median_v = vnorm[:, 0].mean().item(), vnorm.median(dim=1).values.mean().item()
        rows[layer].update(
            {
                "first_attn": on_first.mean().item(),
                "first_attn_max": on_first.max().item(),
                "slot_attn": on_slot.mean().item(),
                "sink_heads": sinks / att.shape[1],
                "start_value_norm": start_v,
                "value_norm_median": median_v,
                "start_value_ratio": start_v / max(median_v, 1e-12),
            }
        )
    out_rows = []
    for layer in sorted(rows):
        r = rows[layer]
        med = max(r["median_abs"], 1e-12)
        out_rows.append(
            {
                "layer": layer,
                **r,
                "top1_over_median": r["top1_abs"] / med,
                "first_over_median": r["first_abs"] / med,
                "start_over_median": r["start_abs"] / med,
                "start_over_median_sqrt_d": r["start_abs"] / med / math.sqrt(c.n_embd),
                "sink1": n_sink / n_heads,
            }
        )
    return out_rows


def evaluate(
    model,
    data,
    probe: torch.Tensor,
    spec: TrainSpec,
    step: int,
    elapsed_s: float = 0.0,
    *,
    raw: GPT | None = None,
    device="cpu",
    autocast=contextlib.nullcontext,
    dtype=None,
) -> list[dict]:
    """The metric rows of one evaluation: per layer, the step, tokens seen, lr, losses and `emergence`.

    `model` computes the losses (it may be compiled or DDP-wrapped); `raw`, the plain GPT inside it,
    the emergence statistics. A non-finite loss estimate is a NonFiniteError.

        >>> rows = evaluate(model, data, probe, spec, step=0)   # doctest: +SKIP
    """
    raw = model if raw is None else raw
    common = {
        "step": step,
        "tokens": step * spec.grad_accum * spec.batch_size * spec.block_size,
        "lr": lr_at(max(step - 1, 0), spec),
        "elapsed_s": elapsed_s,
        "train_loss": estimate_loss(model, data, "train", spec, device, autocast),
        "val_loss": estimate_loss(model, data, "val", spec, device, autocast),
    }
    for split in ("train", "val"):
        check_finite(common[f"{split}_loss"], f"train: the {split}-split loss estimate at step {step}", dtype)
    with autocast():
        layers = emergence(raw, probe, spec.sink_threshold)
    return [{**common, **r} for r in layers]


# ---------------------------------------------------------------- the loop
def train(
    model,
    optimizer,
    data,
    spec: TrainSpec,
    probe: torch.Tensor,
    *,
    raw: GPT | None = None,
    step: int = 0,
    state: dict | None = None,
    device="cpu",
    autocast=contextlib.nullcontext,
    scaler=None,
    rank: int = 0,
    world: int = 1,
    dtype=None,
    checkpoint: str | Path | None = None,
    meta: dict | None = None,
    on_eval: Callable[[int, list[dict], list[dict]], None] | None = None,
    on_log: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train from `step` to spec.max_iters; return the state: metric `rows`, per-step `losses`, `elapsed_s`.

    Rank 0 evaluates at every spec.eval_interval steps and at the end (`evaluate`; then calls
    `on_eval(step, new_rows, all_rows)`), logs the mean loss every spec.log_interval steps
    (`on_log(step, {"train/loss", "lr"})`) and, when `checkpoint` is a path, saves a checkpoint
    every spec.checkpoint_interval steps and at the end (`save_checkpoint(..., **meta)`).
    `state` and `step` come from `load_checkpoint` to resume; steps already evaluated are not
    evaluated again. `model` may be compiled or DDP-wrapped, `raw` is the plain GPT inside it.

        >>> state = train(model, optimizer, data, spec, probe, checkpoint="run/checkpoint.pt")  # doctest: +SKIP
        >>> step, state = load_checkpoint("run/checkpoint.pt", model, optimizer)  # doctest: +SKIP
        >>> state = train(model, optimizer, data, spec, probe, step=step, state=state)  # doctest: +SKIP
    """
    raw = model if raw is None else raw
    state = {"rows": [], "losses": [], "elapsed_s": 0.0, **(state or {})}
    master = rank == 0
    started, window, done_here, resumed_at = time.time(), [], 0, step
    elapsed0 = state["elapsed_s"]
    while True:
        if (
            master
            and (step % spec.eval_interval == 0 or step == spec.max_iters)
            and not any(r["step"] == step for r in state["rows"])
        ):
            rows = evaluate(
                model,
                data,
                probe,
                spec,
                step,
                elapsed0 + time.time() - started,
                raw=raw,
                device=device,
                autocast=autocast,
                dtype=dtype,
            )
            state["rows"].extend(rows)
            if on_eval:
                on_eval(step, rows, state["rows"])
            log.info(
                "step %d: val %.4f, max top1/median %.1f, first/median %s, Sink_1 %.2f, slot attn %s",
                step,
                rows[0]["val_loss"],
                max(r["top1_over_median"] for r in rows),
                [round(r["first_over_median"], 1) for r in rows],
                rows[0]["sink1"],
                [round(r["slot_attn"], 2) for r in rows],
            )
        if (
            master
            and checkpoint is not None
            and step != resumed_at
            and (step == spec.max_iters or step % spec.checkpoint_interval == 0)
        ):
            state["elapsed_s"] = elapsed0 + time.time() - started
            save_checkpoint(checkpoint, raw, optimizer, step, state, **(meta or {}))
        if step >= spec.max_iters:
            break
        loss = check_finite(
            train_step(model, optimizer, data, step, spec, device, autocast, rank, world, scaler),
            f"train: the training loss at step {step}",
            dtype,
        )
        state["losses"].append(loss)
        window.append(loss)
        step, done_here = step + 1, done_here + 1
        if master and step % spec.log_interval == 0:
            if on_log:
                on_log(step, {"train/loss": float(np.mean(window)), "lr": lr_at(step - 1, spec)})
            log.info(
                "step %d: loss %.4f (%.0f ms/step)", step, np.mean(window), 1000 * (time.time() - started) / done_here
            )
            window = []
    return state


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | Path, model: GPT, optimizer, step: int, state: dict, train: dict | None = None, seed: int | None = None
) -> None:
    """Everything a resumed run needs, written atomically. `step` is the next step to run.

    `train` records the training setup (the pipeline stores its whole train config); it must hold
    the architecture as `model` and the `variant`, and defaults to those of `model.config`.

        >>> save_checkpoint("run/checkpoint.pt", model, optimizer, 100, state)   # doctest: +SKIP
    """
    train = train if train is not None else {"model": model.config.arch(), "variant": model.config.variant}
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        },
        "train": train,
        "seed": seed,
        **state,
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | Path, model: GPT, optimizer) -> tuple[int, dict]:
    """Restore model, optimizer and RNG states from `path`; return (next step, state).

    A checkpoint of another architecture or variant than `model.config` is a MassiveError.

        >>> step, state = load_checkpoint("run/checkpoint.pt", model, optimizer)   # doctest: +SKIP
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    saved = ckpt["train"]
    if saved["model"] != model.config.arch() or saved["variant"] != model.config.variant:
        raise MassiveError(
            f"{path} holds a different model ({saved['variant']}, {saved['model']}): delete it to start afresh"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if ckpt["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    random.setstate(ckpt["rng"]["python"])
    np.random.set_state(ckpt["rng"]["numpy"])
    return ckpt["step"], {k: ckpt[k] for k in ("rows", "losses", "elapsed_s") if k in ckpt}


def load_trained(path: str | Path, variant: str | None = None) -> tuple[GPT, dict]:
    """The trained GPT of a checkpoint (eval mode, on the CPU) and the checkpoint itself.

    >>> model, ckpt = load_trained("results/train/cpu_backcopy/attn_bias/checkpoint.pt")  # doctest: +SKIP
    >>> ckpt["step"], model.config.variant  # doctest: +SKIP
    (2000, 'attn_bias')
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["train"]["model"], variant=variant or ckpt["train"]["variant"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


# ---------------------------------------------------------------- comparison of variants
def summarise(
    variant: str,
    metrics: pd.DataFrame,
    step: int,
    layers: list[dict],
    min_abs: float = MIN_ABS,
    min_ratio: float = MIN_RATIO,
    config: GPTConfig | None = None,
    setup: dict | None = None,
) -> dict:
    """One comparison row for a trained variant: the losses of its last evaluation (`metrics`) and the
    `emergence` rows of its final weights (`layers`).

    The start token's largest |a| over the median (`start_over_median`) is taken at the layer where
    it is largest (`start_layer`), beside it the same over sqrt(n_embd), the share of sequences whose
    top-1 entry is the start token there, and block 0's values; the attention sink is block 0's (the
    attention later queries pay to position 0, and to the bias slot), Sink_1 over all heads, and
    the start token's value-state norm over the median token's per layer ("value drain").
    `massive` when top-1 |a| > min_abs and top-1/median > min_ratio (the paper's thresholds; tiny
    models rarely pass them: read the ratios). `setup` (e.g. optimizer, decay, start, after_start,
    dtype) and `config` (n_layer, n_embd, init, tie_head) are recorded in the row: the regime the
    variant was trained in.

        >>> row = summarise("attn_bias", metrics, 2000, emergence(model, probe))   # doctest: +SKIP
    """
    last = metrics[metrics["step"] == metrics["step"].max()].iloc[0]
    top = max(layers, key=lambda r: r["top1_over_median"])
    start = max(layers, key=lambda r: r["start_over_median"])
    b0 = layers[0]
    row = {"variant": variant, **(setup or {})}
    if config is not None:
        row.update(
            {"n_layer": config.n_layer, "n_embd": config.n_embd, "init": config.init, "tie_head": config.tie_head}
        )
    row.update(
        {
            "step": step,
            "train_loss": float(last["train_loss"]),
            "val_loss": float(last["val_loss"]),
            "start_abs": start["start_abs"],
            "start_over_median": start["start_over_median"],
            "start_layer": start["layer"],
            "start_over_median_sqrt_d": start["start_over_median_sqrt_d"],
            "top1_at_start": start["top1_at_start"],
            "block0_start_over_median": b0["start_over_median"],
            "block0_top1_at_start": b0["top1_at_start"],
            "start_attn": b0["first_attn"],
            "slot_attn": b0["slot_attn"],
            "sink1": b0["sink1"],
            "top1_abs": max(r["top1_abs"] for r in layers),
            "max_top1_over_median": top["top1_over_median"],
            "max_layer": top["layer"],
            "elapsed_min": float(last["elapsed_s"]) / 60,
        }
    )
    row["massive"] = bool(row["top1_abs"] > min_abs and row["max_top1_over_median"] > min_ratio)
    for r in layers:
        row[f"layer{r['layer']}_start_over_median"] = r["start_over_median"]
        row[f"layer{r['layer']}_start_value_ratio"] = r["start_value_ratio"]
        row[f"layer{r['layer']}_first_attn"] = r["first_attn"]
    return row


def contrast(
    table: pd.DataFrame, histories: dict[str, pd.DataFrame] | None = None, reference: str = "default"
) -> pd.DataFrame:
    """`table` (one `summarise` row per variant) with the comparison to the `reference` variant.

    At the final step: `val_loss_gap` (this variant's validation loss minus the reference's) and
    `start_contrast` (the reference's start-token |a| / median over this variant's). At matched
    loss, from the evaluation `histories` (each variant's metrics table): the pair's loss level is
    the worse final validation loss of the two; the better model is taken at its first evaluation
    that reaches it, the worse at its final step. `matched_step` / `matched_reference_step` are
    those steps, `matched_val_gap` the loss difference there (this minus the reference) and
    `matched_contrast` the reference's start-token ratio over this variant's there. The paper's claim
    is a large contrast at a gap near 0. Without the reference variant the columns are NaN.

        >>> t = pd.DataFrame({"variant": ["default", "attn_bias"], "val_loss": [2.80, 2.81], "start_over_median": [40.0, 10.0]})
        >>> contrast(t)[["val_loss_gap", "start_contrast"]].round(3).values.tolist()
        [[0.0, 1.0], [0.01, 4.0]]
    """
    out = table.copy()
    matched = ["matched_step", "matched_reference_step", "matched_val_gap", "matched_contrast"]
    ref = out[out["variant"] == reference]
    if ref.empty:
        for col in ["val_loss_gap", "start_contrast", *matched]:
            out[col] = np.nan
        return out
    r = ref.iloc[0]
    out["val_loss_gap"] = out["val_loss"] - r["val_loss"]
    out["start_contrast"] = r["start_over_median"] / out["start_over_median"]
    if not histories or reference not in histories:
        return out

    def per_step(variant):  # step -> (val loss, start-token ratio: the largest over layers)
        return histories[variant].groupby("step").agg(val=("val_loss", "first"), start=("start_over_median", "max"))

    ref_steps = per_step(reference)
    rows = {c: [] for c in matched}
    for _, row in out.iterrows():
        if row["variant"] not in histories:
            for c in matched:
                rows[c].append(np.nan)
            continue
        mine = per_step(row["variant"])
        level = max(ref_steps["val"].iloc[-1], mine["val"].iloc[-1])
        at = {}
        for name, steps in (("ref", ref_steps), ("mine", mine)):
            reached = steps[steps["val"] <= level + 1e-12]
            at[name] = reached.index[0] if len(reached) else steps.index[-1]
        rows["matched_step"].append(int(at["mine"]))
        rows["matched_reference_step"].append(int(at["ref"]))
        rows["matched_val_gap"].append(float(mine.loc[at["mine"], "val"] - ref_steps.loc[at["ref"], "val"]))
        rows["matched_contrast"].append(float(ref_steps.loc[at["ref"], "start"] / mine.loc[at["mine"], "start"]))
    for c in matched:
        out[c] = rows[c]
    return out
