"""The training loop: one optimizer step, the loss estimates and metric rows of an evaluation, and
`train`, which runs the steps, evaluates, logs and checkpoints."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from massive.core.errors import check_finite
from massive.retrain.gpt import GPT
from massive.retrain.train_spec import TrainSpec
from massive.retrain.training.checkpoints import save_checkpoint
from massive.retrain.training.metrics import emergence
from massive.retrain.training.optimizer import lr_at

log = logging.getLogger(__name__)


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
