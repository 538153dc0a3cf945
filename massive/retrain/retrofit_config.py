"""The retrofit's settings, without torch (the pipeline's retrofit.* config is built from them):
its variants by name and RetrofitConfig, how the bias is trained (massive/retrain/retrofit.py)."""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("attn_bias", "sink_logit", "value_bias", "softmax_plus_one", "gate", "mlp_bias")
CONTROLS = ("mlp_bias",)  # variants that change no attention: the parameter-matched control
EXTRA_SLOT = ("attn_bias", "sink_logit", "softmax_plus_one")  # variants that add a column to the softmax


@dataclass
class RetrofitConfig:
    """How the bias is trained: AdamW on the new parameters only; the scalar logits (offsets,
    sinks, gate biases) get `logit_lr`, since their gradients start tiny (the slot starts closed).
    `eps` is AdamW's: far below torch's 1e-8, since a closed slot's gradients (proportional to its
    attention weight, about exp(init_logit)) are themselves near 1e-8, and AdamW's default would
    shrink their steps to a fraction of the learning rate."""

    steps: int = 20
    batch_size: int = 4
    lr: float = 1e-2
    logit_lr: float = 0.5
    weight_decay: float = 0.0
    eps: float = 1e-15
    init_logit: float = -14.0
    seed: int = 1
    eval_every: int = 10
