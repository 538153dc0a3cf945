"""Rule train: train one GPT variant (massive/retrain/gpt.py) and watch massive activations emerge.

    python -m pipeline.train train=cpu_backcopy train.variant=attn_bias
    torchrun --standalone --nproc_per_node=8 -m pipeline.train train=gpt2_124m_owt train.variant=default

The science (the loop, the loss estimates, the emergence metrics on a fixed probe batch,
checkpoints) is massive/retrain/training/; this rule builds its arguments from cfg.train, sets up the
device and DDP, and writes the outputs in results/train/<train.name>/<variant>/:
  resume.pt         model, optimizer, next step, RNG states, metric rows, per-step losses, the train
                    config and seed; rewritten every train.checkpoint_interval steps: a killed run
                    resumes from it with the same next-step loss. Not a Snakemake output (never deleted
                    as incomplete). A resume with other settings (pipeline.resume) is a one-line error.
  checkpoint.pt     the finished run's resume.pt (a hard link, or a copy): train_compare reads it
  metrics.parquet   one row per (eval step, layer), rewritten atomically at every evaluation
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import fields
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from massive.core.errors import MassiveError
from massive.core.files import link
from massive.retrain.gpt_config import GPTConfig
from massive.retrain.train_spec import BackcopySpec, OpenWebTextSpec, TrainSpec
from pipeline import cli, paths, tracking
from pipeline.io import results_dir, root, write_table
from pipeline.names import plain

log = logging.getLogger(__name__)


def out_dir(cfg: DictConfig) -> Path:
    return Path(paths.train_variant_dir(cfg.train.name, plain(cfg.train.variant), results_dir(cfg)))


def make_data(cfg: DictConfig, rank: int = 0):
    from massive.retrain import training

    t = cfg.train
    return training.batches(
        plain(t.data),
        cfg.seed,
        BackcopySpec(**t.backcopy),
        OpenWebTextSpec(**t.openwebtext),
        root(cfg) / cfg.paths.cache / "train" / "openwebtext",
        rank,
    )


def specs(cfg: DictConfig) -> tuple[GPTConfig, TrainSpec]:
    """The architecture and the training hyper-parameters of cfg.train, as the library's dataclasses."""
    t = cfg.train
    names = [f.name for f in fields(TrainSpec) if f.name != "block_size"]
    spec = TrainSpec(block_size=t.model.block_size, **{k: plain(t[k]) for k in names})
    return GPTConfig(**t.model, variant=plain(t.variant)), spec


def _wandb_metrics(rows: list[dict]) -> dict:
    out = {k: rows[0][k] for k in ("train_loss", "val_loss", "sink1", "lr")}
    for r in rows:
        for k in ("top1_over_median", "first_over_median", "top1_abs", "median_abs", "first_attn", "slot_attn"):
            out[f"layer{r['layer']}/{k}"] = r[k]
    out["max_top1_over_median"] = max(r["top1_over_median"] for r in rows)
    return out


def run(cfg: DictConfig) -> None:
    import torch

    from massive.retrain import training
    from pipeline.resume import check_resume, resume_meta

    t = cfg.train
    torch.set_num_threads(t.num_threads)
    rank, local_rank, world = training.distributed()
    if t.grad_accum % world:
        raise MassiveError(f"train.grad_accum={t.grad_accum} is not a multiple of the {world} processes")
    data = make_data(cfg, rank)  # before the process group: OpenWebText may take hours to prepare
    device = training.init_device(t.device, local_rank, world)
    autocast, scaler = training.precision(device, plain(t.dtype))

    out = out_dir(cfg)
    resume_path, ckpt_path, metrics_path = out / "resume.pt", out / "checkpoint.pt", out / "metrics.parquet"
    gpt, spec = specs(cfg)
    raw, optimizer = training.build(gpt, spec, cfg.seed, device)
    step, state = 0, None
    meta = resume_meta(cfg)
    found = (
        resume_path if resume_path.exists() else ckpt_path if ckpt_path.exists() else None
    )  # checkpoint.pt: older runs
    if found is not None and t.resume:
        check_resume(found, meta)
        step, state = training.load_checkpoint(found, raw, optimizer)
        log.info("resuming %s at step %d", found, step)
    elif found is not None:
        log.info("train.resume=false: starting afresh over %s", found)
    model = torch.compile(raw) if t.compile else raw
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[local_rank])
    probe = data.batch("probe", 0, t.probe_batch_size, t.model.block_size)[0].to(device)
    variant = plain(t.variant)
    log.info(
        "train %s/%s: %.2fM parameters, %d steps from %d, device %s x%d",
        t.name,
        variant,
        raw.num_params() / 1e6,
        t.max_iters,
        step,
        device.type,
        world,
    )

    master = rank == 0
    with tracking.stage_run(cfg, name=f"train/{t.name}/{variant}") if master else contextlib.nullcontext() as wb:

        def on_eval(step: int, rows: list[dict], history: list[dict]) -> None:
            write_table(pd.DataFrame(history), metrics_path, cfg)
            wb.log(_wandb_metrics(rows), step=step)

        state = training.train(
            model,
            optimizer,
            data,
            spec,
            probe,
            raw=raw,
            step=step,
            state=state,
            device=device,
            autocast=autocast,
            scaler=scaler,
            rank=rank,
            world=world,
            dtype=plain(t.dtype) if device.type == "cuda" else "float32",
            checkpoint=resume_path,
            meta=meta,
            on_eval=on_eval,
            on_log=lambda step, metrics: wb.log(metrics, step=step),
        )
    if master:  # also when a finished checkpoint was found and nothing ran
        if not resume_path.exists():  # an older run's checkpoint.pt, finished: keep it as the rolling one too
            link(ckpt_path, resume_path)
        link(resume_path, ckpt_path)
        write_table(pd.DataFrame(state["rows"]), metrics_path, cfg)
    if world > 1:
        from torch.distributed import destroy_process_group

        destroy_process_group()


if __name__ == "__main__":
    cli.main("train", run, config_name="train")
