"""The model and its optimizer (AdamW or SGD, decay groups), and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from massive.retrain.gpt import GPT, GPTConfig
from massive.retrain.train_spec import TrainSpec


def build(
    config: GPTConfig, spec: TrainSpec, seed: int, device: torch.device | str = "cpu"
) -> tuple[GPT, torch.optim.Optimizer]:
    """The model (initialised after `torch.manual_seed(seed)`) and its optimizer: AdamW or SGD with
    momentum (`spec.optimizer`), weight decay on the parameters `spec.decay` names.

        >>> model, optimizer = build(GPTConfig(n_layer=2, n_embd=64, n_head=2, block_size=16), TrainSpec(), seed=1)
        >>> type(build(GPTConfig(n_layer=1, n_embd=32, n_head=2, block_size=8), TrainSpec(optimizer="sgd"), 1)[1]).__name__
        'SGD'
    """
    torch.manual_seed(seed)
    model = GPT(config).to(device)
    groups = model.optimizer_groups(spec.weight_decay, spec.decay)
    if spec.optimizer == "sgd":
        return model, torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum)
    fused = torch.device(device).type == "cuda"
    return model, torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), fused=fused)


def lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warmup to spec.lr, then constant or cosine decay to spec.min_lr at spec.max_iters.

    >>> lr_at(0, TrainSpec(lr=1e-2, warmup_iters=9))
    0.001
    """
    if step < spec.warmup_iters:
        return spec.lr * (step + 1) / (spec.warmup_iters + 1)
    if spec.schedule == "constant":
        return spec.lr
    progress = min(1.0, (step - spec.warmup_iters) / max(1, spec.max_iters - spec.warmup_iters))
    return spec.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (spec.lr - spec.min_lr)
