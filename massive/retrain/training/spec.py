"""The training's hyper-parameters: TrainSpec, and the optimizers and schedules it may name."""

from __future__ import annotations

from dataclasses import dataclass

from massive.core.errors import MassiveError
from massive.retrain.gpt import DECAY

OPTIMIZERS = ("adamw", "sgd")  # TrainSpec.optimizer: AdamW (betas beta1, beta2); SGD with momentum, decay as L2
SCHEDULES = ("constant", "cosine")  # TrainSpec.schedule: after the linear warmup, constant or cosine decay to min_lr


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
