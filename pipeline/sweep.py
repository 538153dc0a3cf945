"""A sweep: the models x corpora (and their extra overrides) that the DAG builds, and its
vision transformers x image data (the `vision` section).

`load(name)` reads conf/sweep/<name>.yaml (or a path ending in .yaml), validates it against
conf/schemas/sweep.schema.yaml, checks that every model and corpus names a config file, and
fills in defaults. The Snakefile and the report both call it, so they agree on the targets.
"""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import yaml

from pipeline.cli import CONF_DIR, PipelineError


def path_of(name: str) -> Path:
    return Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / "sweep" / f"{name}.yaml"


def load(name: str) -> dict:
    path = path_of(name)
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
        raise PipelineError(f"sweep {name!r} not found ({path}); known sweeps: {', '.join(known)}")
    sweep = yaml.safe_load(path.read_text()) or {}
    schema = yaml.safe_load((CONF_DIR / "schemas" / "sweep.schema.yaml").read_text())
    try:
        jsonschema.validate(sweep, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise PipelineError(f"sweep {name!r}: {where}: {exc.message}") from None
    vision = sweep.get("vision")
    if not (sweep["models"] and sweep["corpora"]) and not vision:
        raise PipelineError(f"sweep {name!r}: models and corpora must both be non-empty (or the sweep needs a vision section)")
    lists = [("model", "models", sweep), ("data", "corpora", sweep)]
    if vision:
        lists += [("model", "vision.models", vision), ("data", "vision.images", vision)]
        vision.setdefault("interventions", ["none", "zero", "mean", "random_zero", "fix_register_mean"])
        vision.setdefault("layers", ["emerge"])
        vision.setdefault("overrides", [])
    for group, key, where in lists:
        for item in where[key.split(".")[-1]]:
            if not (CONF_DIR / group / f"{item}.yaml").is_file():
                raise PipelineError(f"sweep {name!r}: {key} entry {item!r} has no conf/{group}/{item}.yaml")
    sweep.setdefault("overrides", [])
    sweep.setdefault("model_overrides", {})
    return sweep


def pairs(sweep: dict) -> list[tuple[str, str]]:
    """Every (model, corpus) the sweep captures: models x corpora, then vision models x images."""
    vision = sweep.get("vision") or {"models": [], "images": []}
    return ([(m, c) for m in sweep["models"] for c in sweep["corpora"]]
            + [(m, i) for m in vision["models"] for i in vision["images"]])


def overrides(sweep: dict, model: str | None = None, corpus: str | None = None) -> list[str]:
    """The Hydra overrides of every rule of this sweep (plus a model's own, plus the vision
    section's for a vision model on image data)."""
    out = list(sweep["overrides"]) + list(sweep["model_overrides"].get(model, []) if model else [])
    vision = sweep.get("vision")
    if vision and model in vision["models"] and (corpus is None or corpus in vision["images"]):
        out += list(vision["overrides"])
    return out


def export_group(stem: str) -> None:
    """Name the sweep in the environment of the jobs the Snakefile starts (their W&B group)."""
    os.environ["WANDB_RUN_GROUP"] = stem
