"""Rule train: train one GPT variant (pipeline/gpt.py) and watch massive activations emerge.

    python -m pipeline.train train=cpu_backcopy train.variant=attn_bias
    torchrun --standalone --nproc_per_node=8 -m pipeline.train train=gpt2_124m_owt train.variant=default

AdamW with linear warmup and a cosine (or constant) learning rate, gradient accumulation,
autocast on GPUs, DDP under torchrun (nanoGPT's train.py, reorganised). Every
`train.eval_interval` steps the run estimates the train and validation loss and measures, on a
FIXED probe batch:
  - per layer, the residual stream after the block (pipeline.capture.block_hooks): top-1 |a|
    and median |a| per sequence (averaged over sequences, as the paper), and the largest |a|
    at the first position and at the data's start token;
  - per layer and head, the mean attention that later queries (positions >= 1) pay to the first
    position; a head is a sink head when it exceeds train.sink_threshold (Sink_1, Gu et al. 2024).
    For the bias variants the attention on the bias slot is reported beside it (slot_attn).
The first position of the residual stream is the learned sink for `sink_token` and the data's
start token otherwise.

Outputs in results/train/<train.name>/<variant>/:
  checkpoint.pt     model, optimizer, next step, RNG states, metric rows, per-step losses:
                    a killed run started again resumes from it with the same next-step loss
                    (the batches are a function of the step, not of a stream position)
  metrics.parquet   one row per (eval step, layer), rewritten atomically at every evaluation
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline import cli, tracking
from pipeline.backcopy import Backcopy, BackcopySpec
from pipeline.cli import PipelineError
from pipeline.gpt import GPT, GPTConfig
from pipeline.io import atomic_path, root, write_table

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- paths
def out_dir(cfg: DictConfig) -> Path:
    return root(cfg) / cfg.paths.results / "train" / cfg.train.name / _value(cfg.train.variant)


def _value(x) -> str:
    return getattr(x, "value", x)


# ---------------------------------------------------------------- data
class BackcopyData:
    """Bigram-Backcopy batches; micro-batch `index` of a step is its own seeded sample."""

    def __init__(self, cfg: DictConfig):
        b = cfg.train.backcopy
        self.task = Backcopy(BackcopySpec(b.vocab_size, b.n_triggers, b.alpha, b.task_seed))
        self.seed = cfg.seed

    def batch(self, split: str, index: int, batch_size: int, block_size: int):
        return self.task.batch(split, index, batch_size, block_size, seed=self.seed)


class OpenWebTextData:
    """OpenWebText tokenised once (GPT-2 BPE, EOT between documents) into uint16 memmaps.

    Rank 0 prepares cache/train/openwebtext/{train,val}.bin from the `datasets` hub copy; other
    ranks wait for the marker file. A batch draws random windows seeded by (seed, split, index).
    """

    def __init__(self, cfg: DictConfig, rank: int = 0):
        self.dir = root(cfg) / cfg.paths.cache / "train" / "openwebtext"
        self.seed = cfg.seed
        self.spec = cfg.train.openwebtext
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

        tok = AutoTokenizer.from_pretrained(self.spec.tokenizer)
        eot = tok.eos_token_id
        ds = load_dataset(self.spec.hub_id, num_proc=self.spec.num_proc)["train"]
        parts = ds.train_test_split(test_size=self.spec.val_fraction, seed=2357, shuffle=True)

        def encode(example):
            ids = tok(example["text"], add_special_tokens=False)["input_ids"] + [eot]
            return {"ids": ids, "len": len(ids)}

        self.dir.mkdir(parents=True, exist_ok=True)
        for split, part in (("train", parts["train"]), ("val", parts["test"])):
            part = part.map(encode, remove_columns=["text"], num_proc=self.spec.num_proc, desc=f"tokenise {split}")
            total = int(np.sum(part["len"], dtype=np.uint64))
            with atomic_path(self.dir / f"{split}.bin") as tmp:
                arr = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(total,))
                at, shards = 0, 1024
                for i in range(shards):
                    chunk = np.concatenate(part.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")["ids"])
                    arr[at : at + len(chunk)] = chunk
                    at += len(chunk)
                arr.flush()
                del arr

    def batch(self, split: str, index: int, batch_size: int, block_size: int):
        data = np.memmap(self.dir / ("val.bin" if split == "val" else "train.bin"), dtype=np.uint16, mode="r")
        salt = {"train": 0, "val": 1, "probe": 2}[split]
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + salt) * 1_000_003 + index) % (2**63))
        ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=g).tolist()
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y


def make_data(cfg: DictConfig, rank: int = 0):
    return BackcopyData(cfg) if _value(cfg.train.data) == "backcopy" else OpenWebTextData(cfg, rank)


# ---------------------------------------------------------------- model and optimizer
def gpt_config(cfg: DictConfig) -> GPTConfig:
    m = cfg.train.model
    return GPTConfig(vocab_size=m.vocab_size, block_size=m.block_size, n_layer=m.n_layer, n_head=m.n_head,
                     n_embd=m.n_embd, dropout=m.dropout, bias=m.bias, variant=_value(cfg.train.variant))


def build(cfg: DictConfig, device: torch.device | str = "cpu"):
    """The model (seeded by cfg.seed) and its AdamW optimizer."""
    t = cfg.train
    torch.manual_seed(cfg.seed)
    model = GPT(gpt_config(cfg)).to(device)
    fused = torch.device(device).type == "cuda"
    optimizer = torch.optim.AdamW(model.optimizer_groups(t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)
    return model, optimizer


def lr_at(step: int, t: DictConfig) -> float:
    """Linear warmup to t.lr, then constant or cosine decay to t.min_lr at t.max_iters."""
    if step < t.warmup_iters:
        return t.lr * (step + 1) / (t.warmup_iters + 1)
    if _value(t.schedule) == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup_iters) / max(1, t.max_iters - t.warmup_iters))
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (t.lr - t.min_lr)


def train_step(model, optimizer, data, step: int, cfg: DictConfig, device, autocast=contextlib.nullcontext,
               rank: int = 0, world: int = 1, scaler=None) -> float:
    """One optimizer step (all micro-batches of this rank); returns the step's mean loss before the update."""
    t = cfg.train
    accum = t.grad_accum // world
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, t)
    total = 0.0
    for micro in range(accum):
        x, y = data.batch("train", (step * accum + micro) * world + rank, t.batch_size, t.model.block_size)
        if world > 1:  # synchronise gradients on the last micro-batch only
            model.require_backward_grad_sync = micro == accum - 1
        with autocast():
            loss = model(x.to(device), targets=y.to(device)).loss / accum
        (scaler.scale(loss) if scaler else loss).backward()
        total += loss.item()
    if scaler:
        scaler.unscale_(optimizer)
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# ---------------------------------------------------------------- evaluation and emergence metrics
@torch.no_grad()
def estimate_loss(model, data, split: str, cfg: DictConfig, device, autocast=contextlib.nullcontext) -> float:
    """Mean loss over train.eval_iters fixed batches of `split` (the same batches at every evaluation)."""
    t = cfg.train
    was_training = model.training
    model.eval()
    losses = []
    for k in range(t.eval_iters):
        x, y = data.batch(split, 10**9 + k if split == "train" else k, t.batch_size, t.model.block_size)
        with autocast():
            losses.append(model(x.to(device), targets=y.to(device)).loss.item())
    model.train(was_training)
    return float(np.mean(losses))


@torch.no_grad()
def emergence(model: GPT, x: torch.Tensor, sink_threshold: float) -> list[dict]:
    """Per-layer residual-stream and attention-sink statistics of `model` on the batch `x`."""
    from pipeline.capture import block_hooks  # the capture's own hooks: the same residual stream

    c = model.config
    rows: dict[int, dict] = {}

    def keep(layer: int, h: torch.Tensor) -> None:
        a = h.detach().float().abs()  # (B, n_prefix + T, C)
        flat = a.flatten(1)
        top1, where = flat.max(dim=1)
        median = flat.median(dim=1).values
        first = a[:, 0].max(dim=1).values
        start = a[:, c.n_prefix].max(dim=1).values
        rows[layer] = {"top1_abs": top1.mean().item(), "median_abs": median.mean().item(),
                       "first_abs": first.mean().item(), "start_abs": start.mean().item(),
                       "top1_at_first": (where // a.shape[-1] == 0).float().mean().item()}

    was_training = model.training
    model.eval()
    with block_hooks(model, keep):
        out = model(x, return_attn=True)
    model.train(was_training)
    n_heads = sum(att.shape[1] for att in out.attentions)
    n_sink = 0
    for layer, att in enumerate(out.attentions):  # (B, H, T', n_slot + T')
        on_first = att[:, :, 1:, c.n_slot].float().mean(dim=(0, 2))  # per head: later queries -> first position
        on_slot = att[:, :, :, 0].float().mean(dim=(0, 2)) if c.n_slot else torch.zeros_like(on_first)
        sinks = int((on_first > sink_threshold).sum())
        n_sink += sinks
        r = rows[layer]
        r.update({"first_attn": on_first.mean().item(), "first_attn_max": on_first.max().item(),
                  "slot_attn": on_slot.mean().item(), "sink_heads": sinks / att.shape[1]})
    out_rows = []
    for layer in sorted(rows):
        r = rows[layer]
        med = max(r["median_abs"], 1e-12)
        out_rows.append({"layer": layer, **r, "top1_over_median": r["top1_abs"] / med,
                         "first_over_median": r["first_abs"] / med, "start_over_median": r["start_abs"] / med,
                         "sink1": n_sink / n_heads})
    return out_rows


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model, optimizer, step: int, state: dict, cfg: DictConfig) -> None:
    """Everything a resumed run needs, written atomically. `step` is the next step to run."""
    ckpt = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(), "numpy": np.random.get_state()},
        "train": OmegaConf.to_container(cfg.train, resolve=True, enum_to_str=True), "seed": cfg.seed, **state,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: Path, model, optimizer, cfg: DictConfig) -> tuple[int, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    want = OmegaConf.to_container(cfg.train.model, resolve=True)
    if ckpt["train"]["model"] != want or ckpt["train"]["variant"] != _value(cfg.train.variant):
        raise PipelineError(f"{path} holds a different model ({ckpt['train']['variant']}, {ckpt['train']['model']}): "
                            f"delete it to start afresh")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if ckpt["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    random.setstate(ckpt["rng"]["python"])
    np.random.set_state(ckpt["rng"]["numpy"])
    return ckpt["step"], {k: ckpt[k] for k in ("rows", "losses", "elapsed_s") if k in ckpt}


# ---------------------------------------------------------------- the run
def _distributed():
    """(rank, local_rank, world) under torchrun, else (0, 0, 1)."""
    if int(os.environ.get("RANK", -1)) < 0:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def _strip_hydra(cfg: DictConfig) -> DictConfig:
    if "hydra" not in cfg:
        return cfg
    cfg = copy.deepcopy(cfg)
    with cli.open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _wandb_metrics(rows: list[dict]) -> dict:
    first = rows[0]
    out = {k: first[k] for k in ("train_loss", "val_loss", "sink1", "lr")}
    for r in rows:
        for k in ("top1_over_median", "first_over_median", "top1_abs", "median_abs", "first_attn", "slot_attn"):
            out[f"layer{r['layer']}/{k}"] = r[k]
    out["max_top1_over_median"] = max(r["top1_over_median"] for r in rows)
    return out


def run(cfg: DictConfig) -> None:
    cfg = _strip_hydra(cfg)
    t = cfg.train
    torch.set_num_threads(t.num_threads)
    rank, local_rank, world = _distributed()
    if t.grad_accum % world:
        raise PipelineError(f"train.grad_accum={t.grad_accum} is not a multiple of the {world} processes")
    master = rank == 0
    data = make_data(cfg, rank)  # before the process group: OpenWebText may take hours to prepare
    if world > 1:
        from torch.distributed import init_process_group

        init_process_group(backend="nccl")
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cuda" if t.device == "auto" and torch.cuda.is_available() else ("cpu" if t.device == "auto" else t.device))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[_value(t.dtype)]
    use_amp = device.type == "cuda" and dtype != torch.float32
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and dtype == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    out = out_dir(cfg)
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.parquet"
    raw, optimizer = build(cfg, device)
    step, state = 0, {"rows": [], "losses": [], "elapsed_s": 0.0}
    if ckpt_path.exists():
        step, loaded = load_checkpoint(ckpt_path, raw, optimizer, cfg)
        state.update(loaded)
        log.info("resuming %s at step %d", ckpt_path, step)
    model = raw
    if t.compile:
        model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[local_rank])
    probe, _ = data.batch("probe", 0, t.probe_batch_size, t.model.block_size)
    probe = probe.to(device)
    variant = _value(t.variant)
    log.info("train %s/%s: %.2fM parameters, %d steps from %d, device %s x%d", t.name, variant,
             raw.num_params() / 1e6, t.max_iters, step, device.type, world)

    wandb_run = tracking.stage_run(cfg, name=f"train/{t.name}/{variant}") if master else contextlib.nullcontext()
    with wandb_run as wb:
        started, window, done_here, resumed_at = time.time(), [], 0, step
        elapsed0 = state["elapsed_s"]
        while True:
            if master and (step % t.eval_interval == 0 or step == t.max_iters) and not any(r["step"] == step for r in state["rows"]):
                elapsed = elapsed0 + time.time() - started
                common = {"step": step, "tokens": step * t.grad_accum * t.batch_size * t.model.block_size,
                          "lr": lr_at(max(step - 1, 0), t), "elapsed_s": elapsed,
                          "train_loss": estimate_loss(model, data, "train", cfg, device, autocast),
                          "val_loss": estimate_loss(model, data, "val", cfg, device, autocast)}
                with autocast():
                    layers = emergence(raw, probe, t.sink_threshold)
                rows = [{**common, **r} for r in layers]
                state["rows"].extend(rows)
                write_table(pd.DataFrame(state["rows"]), metrics_path, cfg)
                wb.log(_wandb_metrics(rows), step=step)
                log.info("step %d: val %.4f, max top1/median %.1f, first/median %s, Sink_1 %.2f, slot attn %s",
                         step, common["val_loss"], max(r["top1_over_median"] for r in layers),
                         [round(r["first_over_median"], 1) for r in layers], layers[0]["sink1"],
                         [round(r["slot_attn"], 2) for r in layers])
            if master and step != resumed_at and (step == t.max_iters or step % t.checkpoint_interval == 0):
                state["elapsed_s"] = elapsed0 + time.time() - started
                save_checkpoint(ckpt_path, raw, optimizer, step, state, cfg)
            if step >= t.max_iters:
                break
            loss = train_step(model, optimizer, data, step, cfg, device, autocast, rank, world, scaler)
            state["losses"].append(loss)
            window.append(loss)
            step, done_here = step + 1, done_here + 1
            if master and step % t.log_interval == 0:
                wb.log({"train/loss": float(np.mean(window)), "lr": lr_at(step - 1, t)}, step=step)
                log.info("step %d: loss %.4f (%.0f ms/step)", step, np.mean(window),
                         1000 * (time.time() - started) / done_here)
                window = []
    if master:  # also when a finished checkpoint was found and nothing ran
        write_table(pd.DataFrame(state["rows"]), metrics_path, cfg)
    if world > 1:
        from torch.distributed import destroy_process_group

        destroy_process_group()


if __name__ == "__main__":
    cli.main("train", run, config_name="train")
