"""Whether a training run's checkpoint may be resumed: only by a run of the same settings.

Shared by rule train (before it resumes) and by the DAG's dry-run checks (pipeline/checks.py), so
`snakemake -n` refuses a resume with other settings before any job runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from massive.core.errors import MassiveError

# train.* keys that do not change the trained weights or the metrics: a resume may change them. max_iters
# extends (or shortens) a run with a constant schedule; the cosine schedule depends on it.
RESUME_FREE = ("name", "num_threads", "device", "compile", "log_interval", "checkpoint_interval", "resume")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_meta(cfg: DictConfig) -> dict:
    """What a checkpoint records of the run that made it: the whole train config (data included) and the seed."""
    return {"train": OmegaConf.to_container(cfg.train, resolve=True, enum_to_str=True), "seed": cfg.seed}


def check_resume(path: Path, meta: dict) -> None:
    """A checkpoint is resumed only by a run of the same settings: its train config (but RESUME_FREE)
    and seed equal `meta`'s, else a MassiveError naming the first differences."""
    saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    free = set(RESUME_FREE) | ({"max_iters"} if meta["train"].get("schedule") == "constant" else set())
    old = {f"train.{k}": v for k, v in _flat(saved.get("train") or {}).items() if k not in free}
    new = {f"train.{k}": v for k, v in _flat(meta["train"]).items() if k not in free}
    old["seed"], new["seed"] = saved.get("seed"), meta["seed"]
    diff = [
        f"{k}={old.get(k, '(unset)')} there, {new.get(k, '(unset)')} now"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    if diff:
        raise MassiveError(
            f"{path} was trained with other settings ({'; '.join(diff[:3])}"
            f"{'; ...' if len(diff) > 3 else ''}): choose another train.name, or set train.resume=false "
            f"to start afresh (it overwrites this run)"
        )
