"""Weights & Biases logging: one run per stage, grouped by sweep, typed by stage.

The mode comes from the config (wandb.mode: offline by default, online, disabled). Offline runs
land in wandb/ under the working directory; `wandb sync wandb/offline-run-*` uploads them later.
Parquet files under results/ stay the source of truth: W&B gets copies of metrics, tables and
figures for browsing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.io import git_commit, package_versions, root


@contextlib.contextmanager
def stage_run(cfg: DictConfig, name: str | None = None) -> Iterator["wandb.sdk.wandb_run.Run"]:
    import wandb

    mode = cfg.wandb.mode.value if hasattr(cfg.wandb.mode, "value") else cfg.wandb.mode
    wandb_dir = root(cfg)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    config = OmegaConf.to_container(cfg, resolve=True)
    config["git_commit"] = git_commit()
    config["packages"] = package_versions()
    run = wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=os.environ.get("WANDB_RUN_GROUP") or cfg.sweep_name,  # the Snakefile sets it to the sweep
        job_type=cfg.stage,
        name=name or f"{cfg.stage}/{cfg.model.name}/{cfg.data.name}",
        config=config,
        mode=mode,
        dir=str(wandb_dir),
        reinit="finish_previous",
    )
    try:
        yield run
    finally:
        run.finish()


def table(df: pd.DataFrame):
    import wandb

    return wandb.Table(dataframe=df.reset_index(drop=True))


def image(path: str | Path):
    import wandb

    return wandb.Image(str(path))


def wandb_html(path: str | Path):
    import wandb

    return wandb.Html(Path(path).read_text())
