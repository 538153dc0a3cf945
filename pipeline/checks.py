"""Checks at compose time: every value of the composed config that can be checked against the
fetched model's config.json is checked before anything is loaded, so a bad value fails in a
second with one line, not after loading the model and running a batch.

`preflight(cfg, stage)` is called by pipeline.cli.main before `run(cfg)`. It reads only the
model's config (transformers.AutoConfig, no weights) and, for a vision model's top-k, its
preprocessor_config.json; a stage checks only the values it uses:

  tokenize        seq_len <= the model's maximum positions (text)
  capture         seq_len, and capture.top_k <= the entries of one layer and sequence
                  (tokens x hidden size)
  figures         figures.layer_3d within the blocks
  attention       seq_len, attention.heatmap_layers within the blocks
  ablate,
  zeroshot        seq_len, the blocks of ablate.layers in range
  ablate_images   the blocks of ablate.layers in range
  origins         seq_len
  inference       seq_len

A model that is not fetched yet is not checked here: the rule reports that itself.

    >>> preflight(compose(["capture.top_k=1000000000"]), "capture")
    MassiveError: capture.top_k=1000000000 is above the 16384 entries of one layer and sequence ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from massive.core.errors import MassiveError
from pipeline.config import is_images, layers_spec
from pipeline.io import model_dir
from pipeline.model import MARKER, facts, hf_dir, need
from pipeline.names import plain


def seq_len(cfg: DictConfig) -> int:
    """The tokens per sequence: tokenize.seq_len, or the model's seq_len."""
    return cfg.tokenize.seq_len or cfg.model.seq_len


def image_tokens(cfg: DictConfig, facts: dict) -> int | None:
    """Tokens per image of a ViT (CLS, registers, patches of the processor's output size), or None."""
    path = hf_dir(cfg) / "preprocessor_config.json"
    pre = json.loads(path.read_text()) if path.is_file() else {}
    size = pre.get("crop_size") if pre.get("do_center_crop") else pre.get("size")
    if not (isinstance(size, dict) and "height" in size and "width" in size):
        return None
    patch = need(facts, "patch_size", cfg.model.name)
    return 1 + facts["num_register_tokens"] + (int(size["height"]) // patch) * (int(size["width"]) // patch)


def check_seq_len(cfg: DictConfig, facts: dict) -> None:
    limit, n = facts["max_positions"], seq_len(cfg)
    if not is_images(cfg.data) and limit is not None and n > limit:
        raise MassiveError(f"seq_len={n} is above the maximum positions of {cfg.model.name!r} ({limit})")


def check_top_k(cfg: DictConfig, facts: dict) -> None:
    tokens = image_tokens(cfg, facts) if is_images(cfg.data) else seq_len(cfg)
    if tokens is None:
        return
    d, k = need(facts, "hidden_size", cfg.model.name), cfg.capture.top_k
    if k > tokens * d:
        raise MassiveError(
            f"capture.top_k={k} is above the {tokens * d} entries of one layer and sequence "
            f"of {cfg.model.name!r} ({tokens} tokens x {d} dims)"
        )


def _blocks(cfg: DictConfig, facts: dict, key: str, layers: list[int]) -> None:
    n = need(facts, "num_layers", cfg.model.name)
    bad = [x for x in layers if not 0 <= x < n]
    if bad:
        raise MassiveError(f"{key}: block {bad[0]} is out of range: {cfg.model.name!r} has blocks 0..{n - 1}")


def check_layer_3d(cfg: DictConfig, facts: dict) -> None:
    if cfg.figures.layer_3d is not None:
        n = need(facts, "num_layers", cfg.model.name)
        if not 0 <= cfg.figures.layer_3d < n:
            raise MassiveError(f"figures.layer_3d={cfg.figures.layer_3d} is outside 0..{n - 1}")


def check_heatmap_layers(cfg: DictConfig, facts: dict) -> None:
    layers = OmegaConf.select(cfg, "attention.heatmap_layers")
    if layers is not None:
        _blocks(cfg, facts, "attention.heatmap_layers", [int(x) for x in layers])


def check_ablate_layers(cfg: DictConfig, facts: dict) -> None:
    spec = layers_spec(cfg.ablate.layers)
    if not isinstance(spec, str):
        _blocks(cfg, facts, "ablate.layers", spec)


CHECKS: dict[str, list[Callable[[DictConfig, dict], None]]] = {
    "tokenize": [check_seq_len],
    "capture": [check_seq_len, check_top_k],
    "figures": [check_layer_3d],
    "attention": [check_seq_len, check_heatmap_layers],
    "ablate": [check_seq_len, check_ablate_layers],
    "zeroshot": [check_seq_len, check_ablate_layers],
    "ablate_images": [check_ablate_layers],
    "origins": [check_seq_len],
    "inference": [check_seq_len],
}


def preflight(cfg: DictConfig, stage: str) -> None:
    """Check the values `stage` uses against the fetched model's config (the facts fetch_model recorded,
    pipeline.model.facts); MassiveError naming the first bad one. Nothing to check before the fetch."""
    if stage not in CHECKS or "model" not in cfg or not (model_dir(cfg) / MARKER).is_file():
        return
    known = facts(cfg)
    for check in CHECKS[stage]:
        check(cfg, known)


def dry_run(cfg: DictConfig) -> None:
    """The checks a job's rule runs before loading anything, made while Snakemake builds the DAG
    (pipeline.sweep.check_configs), so `snakemake -n` fails on them before any output is deleted: a
    rule's values against the fetched model's config.json (preflight), and a training run's
    resume.pt against its settings (pipeline.resume.check_resume)."""
    if "train" in cfg and "model" not in cfg:
        if cfg.stage == "train" and cfg.train.resume:
            from pipeline.io import results_dir
            from pipeline.paths import train_run_file

            variant = plain(cfg.train.variant)
            resume = Path(train_run_file(cfg.train.name, variant, "resume.pt", results_dir(cfg)))
            if resume.is_file():
                from pipeline.resume import check_resume, resume_meta

                check_resume(resume, resume_meta(cfg))
        return
    preflight(cfg, cfg.stage)
