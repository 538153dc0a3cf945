"""Checkpoints: everything a resumed run needs (model, optimizer, RNG states, metric rows), written
atomically; a resumed run gives the same next-step losses, bit for bit."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from massive.core.errors import MassiveError
from massive.core.files import atomic_path
from massive.retrain.gpt import GPT, GPTConfig


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
