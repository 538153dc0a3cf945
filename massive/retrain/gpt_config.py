"""The GPT's architecture (GPTConfig) and the names its fields take, without torch: beside the
nn.Modules of massive/retrain/gpt.py, so that the pipeline's config schema (train.model) is the
library's own dataclass and composing it imports no torch.

    >>> GPTConfig(n_layer=2, variant="sink_token").n_prefix   # the sink token sits in front
    1
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from massive.core.errors import MassiveError

VARIANTS = ("default", "sink_token", "attn_bias", "softmax_plus_one", "gated")
SLOT_VARIANTS = ("attn_bias", "softmax_plus_one")  # variants with an extra key/value slot
INITS = ("gpt2", "pytorch")  # how the weights start (GPTConfig.init)
DECAY = ("matrices", "all", "none")  # which parameters weight decay applies to (GPT.optimizer_groups)
NOT_ARCH = ("variant", "model_type")  # GPTConfig's fields that are not the architecture (GPTConfig.arch)


@dataclass
class GPTConfig:
    """The architecture: nanoGPT's GPT-2 hyper-parameters and the attention `variant`.

    >>> GPTConfig(n_layer=2, variant="sink_token").n_prefix   # the sink token sits in front
    1
    """

    vocab_size: int = 50304  # GPT-2's 50257, padded to a multiple of 64
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in the Linears and LayerNorms, like GPT-2
    init: str = "gpt2"  # "gpt2": N(0, 0.02), residual projections / sqrt(2 n_layer); "pytorch": torch's defaults
    tie_head: bool = True  # the output head shares the token embedding (GPT-2); False: its own nn.Linear
    head_bias: bool = False  # a bias on the output head's logits (an untied head only)
    variant: str = "default"
    model_type: str = "massive_gpt"

    def __post_init__(self):
        self.variant = getattr(self.variant, "value", self.variant)  # accept the config's Enums
        self.init = getattr(self.init, "value", self.init)
        if self.variant not in VARIANTS:
            raise MassiveError(f"variant={self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.head_bias and self.tie_head:
            raise MassiveError(
                "head_bias=true needs tie_head=false (the tied head is the embedding matrix, without a bias)"
            )
        if self.init not in INITS:
            raise MassiveError(f"init={self.init!r} is not one of {', '.join(INITS)}")
        if self.n_embd % self.n_head:
            raise MassiveError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")

    def arch(self) -> dict:
        """The architecture without the variant (what a checkpoint records as its `model`).

        >>> sorted(GPTConfig().arch())[:3]
        ['bias', 'block_size', 'dropout']
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_ARCH}

    # the names massive.core.arch reads
    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def max_position_embeddings(self) -> int:
        return self.block_size

    @property
    def n_slot(self) -> int:
        """Key/value columns in front of the tokens' keys (the attention-bias slot)."""
        return 1 if self.variant in SLOT_VARIANTS else 0

    @property
    def n_prefix(self) -> int:
        """Positions in front of the tokens in the residual stream (the sink token)."""
        return 1 if self.variant == "sink_token" else 0
