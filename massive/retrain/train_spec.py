"""The training run's settings, without torch (the pipeline's train.* config is built from them):
TrainSpec (the optimisation and evaluation), BackcopySpec and OpenWebTextSpec (its data), and
the names their fields take. The torch code that uses them: massive/retrain/training/, backcopy.py."""

from __future__ import annotations

from dataclasses import dataclass

from massive.core.errors import MassiveError
from massive.retrain.gpt_config import DECAY

OPTIMIZERS = ("adamw", "sgd")  # TrainSpec.optimizer: AdamW (betas beta1, beta2); SGD with momentum, decay as L2
DATA_NAMES = ("backcopy", "openwebtext")  # a training run's data (massive.retrain.training.batches.DATA)
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


STARTS = ("inside", "outside")  # BackcopySpec.start
AFTER_START = ("bigram", "uniform")  # BackcopySpec.after_start


@dataclass
class BackcopySpec:
    """The task's parameters (the pipeline's train.backcopy config)."""

    vocab_size: int = 64  # token ids of the language (with the start token when it is inside)
    n_triggers: int = 3
    alpha: float = 0.2  # Dirichlet concentration of the bigram rows
    task_seed: int = 0
    start: str = "inside"  # "inside": the start token is id 0; "outside": an extra id, vocab_size
    after_start: str = "bigram"  # position 1: "bigram" (the start token's row) or "uniform" (non-triggers)
    loss_on_first: bool = True  # False: no loss on predicting position 1 from the start token (target -1)

    def __post_init__(self):
        for key, allowed in (("start", STARTS), ("after_start", AFTER_START)):
            value = getattr(getattr(self, key), "value", getattr(self, key))  # accept the config's Enum
            setattr(self, key, value)
            if value not in allowed:
                raise MassiveError(f"backcopy.{key}={value!r} is not one of {', '.join(allowed)}")

    @property
    def n_ids(self) -> int:
        """Token ids a model of this task needs (the start token's included)."""
        return self.vocab_size + (self.start == "outside")


@dataclass
class OpenWebTextSpec:
    """Where OpenWebText comes from and how it is split (the pipeline's train.openwebtext config)."""

    hub_id: str = "Skylion007/openwebtext"
    tokenizer: str = "openai-community/gpt2"
    val_fraction: float = 0.0005  # nanoGPT's split
    num_proc: int = 8  # processes that tokenise it
