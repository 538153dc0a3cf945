"""One GPT-2, five ways to give attention somewhere to rest: the models of the retraining experiment.

Sun et al. (COLM 2024, section 5) retrain GPT-2 with an explicit attention bias and find that
the massive activations disappear: the model no longer needs a token with a huge hidden state
to act as an attention sink. The variants, chosen by `GPTConfig.variant`:

  default           GPT-2 as in nanoGPT (pre-LN, learned positions, tied embeddings)
  sink_token        a learned token prepended after the position embeddings, dropped before
                    the final norm (so the logits keep their shape)
  attn_bias         per layer and head a learned key k' and value v' in R^{d_head}, N(0, 0.02),
                    prepended to K and V and visible to every query:
                        softmax(Q [K^T k'] / sqrt(d)) [V; v'^T]
  softmax_plus_one  the same slot with k' = 0 and v' = 0, fixed: softmax gets a "+1" in its
                    denominator (Miller 2023)
  gated             attention output gated elementwise, per head, before the output projection:
                        y = c_proj(attn(x) * sigmoid(x W_g))   (Qiu et al. 2025)

The model is shaped for the library's parts and hooks (`massive.core.arch.find_parts`,
`massive.core.hooks`): `.config` has `num_hidden_layers`, `max_position_embeddings` and `model_type`;
the blocks are the ModuleList `blocks`; each block has one child named `attn` and one named
`mlp`; the final norm `ln_f` is a sibling of `blocks`; a block returns the residual stream after
both residual adds (`blocks.{L}.hook_resid_post`). `forward(..., return_attn=True)` also returns
every layer's attention probabilities.

    >>> import torch
    >>> from massive.retrain.gpt import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, variant="attn_bias"))
    >>> out = model(torch.zeros(1, 16, dtype=torch.long), return_attn=True)
    >>> out.logits.shape, out.attentions[0].shape   # the bias slot is key 0
    (torch.Size([1, 16, 64]), torch.Size([1, 2, 16, 17]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from massive.core.errors import MassiveError
from massive.retrain.gpt_config import (  # noqa: F401 - the config and its names, also importable from here
    DECAY,
    INITS,
    NOT_ARCH,
    SLOT_VARIANTS,
    VARIANTS,
    GPTConfig,
)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.variant = config.variant
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.variant == "attn_bias":  # the explicit attention bias: learned k', v' per head
            self.k_bias = nn.Parameter(torch.randn(config.n_head, self.head_dim) * 0.02)
            self.v_bias = nn.Parameter(torch.randn(config.n_head, self.head_dim) * 0.02)
        elif config.variant == "softmax_plus_one":  # a zero key and a zero value, not learned
            self.register_buffer("k_bias", torch.zeros(config.n_head, self.head_dim), persistent=False)
            self.register_buffer("v_bias", torch.zeros(config.n_head, self.head_dim), persistent=False)
        if config.variant == "gated":
            self.c_gate = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.slot_enabled = True  # False masks the slot out (an ablation: then attn_bias == default)
        self.record = False  # True keeps the next forward's attention probabilities (.att) and values (.v)
        self.att: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None  # (B, n_head, T, head_dim): the tokens' value states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
        if self.record:
            self.v = v.detach()
        visible = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # query t sees keys <= t
        if hasattr(self, "k_bias"):  # prepend the slot to K and V, visible to every query
            k = torch.cat([self.k_bias.to(k.dtype).expand(B, -1, -1).unsqueeze(2), k], dim=2)
            v = torch.cat([self.v_bias.to(v.dtype).expand(B, -1, -1).unsqueeze(2), v], dim=2)
            slot = torch.full((T, 1), self.slot_enabled, dtype=torch.bool, device=x.device)
            visible = torch.cat([slot, visible], dim=1)  # (T, 1 + T)
        if self.record or not x.is_cuda:  # explicit attention: readable, exact, and keeps probabilities
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            att = att.masked_fill(~visible, float("-inf")).softmax(dim=-1)
            if self.record:
                self.att = att.detach()
            y = self.attn_dropout(att) @ v
        else:  # fused kernel on GPUs; the same function
            p = self.attn_dropout.p if self.training else 0.0
            if hasattr(self, "k_bias"):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=p)
            else:  # plain causal: lets torch pick flash attention
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        if hasattr(self, "c_gate"):  # elementwise, per head: each head's output dims get their own gate
            y = y * torch.sigmoid(self.c_gate(x))
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x  # the residual stream after this block (what the capture reads)


@dataclass
class GPTOutput:
    logits: torch.Tensor  # (B, T, vocab)
    loss: Optional[torch.Tensor] = None  # mean cross-entropy when targets are given
    attentions: Optional[tuple] = None  # per layer (B, n_head, T', n_slot + T'), T' = n_prefix + T
    values: Optional[tuple] = None  # per layer (B, n_head, T', head_dim): the value states (not the slot's)


class GPT(nn.Module):
    """GPT-2 with the attention variant of `config`; `forward(ids, targets=None, return_attn=False)`.

    >>> model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    >>> ids = torch.randint(0, 64, (4, 16))
    >>> model(ids, targets=ids).loss   # mean next-token cross-entropy  # doctest: +SKIP
    tensor(4.16, grad_fn=...)
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        if config.variant == "sink_token":
            self.sink = nn.Parameter(torch.randn(1, 1, config.n_embd) * 0.02)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.head_bias)
        if config.tie_head:
            self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        if config.init == "gpt2":  # otherwise every module keeps torch's own default initialisation
            self.apply(self._init_weights)
            for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def forward(
        self, input_ids: torch.Tensor, targets: Optional[torch.Tensor] = None, return_attn: bool = False, **kwargs
    ) -> GPTOutput:
        B, T = input_ids.shape
        if T > self.config.block_size:
            raise MassiveError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))
        if hasattr(self, "sink"):  # after the position embeddings: the sink has no position
            x = torch.cat([self.sink.expand(B, -1, -1).to(x.dtype), x], dim=1)
        attns = [blk.attn for blk in self.blocks]
        for a in attns:
            a.record, a.att, a.v = return_attn, None, None
        try:
            for block in self.blocks:
                x = block(x)
        finally:
            for a in attns:
                a.record = False
        x = self.ln_f(x[:, self.config.n_prefix :])  # the sink token is dropped before the final norm
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        attentions = tuple(a.att for a in attns) if return_attn else None
        values = tuple(a.v for a in attns) if return_attn else None
        for a in attns:
            a.att, a.v = None, None
        return GPTOutput(logits=logits, loss=loss, attentions=attentions, values=values)

    def optimizer_groups(self, weight_decay: float, decay: str = "matrices") -> list[dict]:
        """Optimizer groups: which parameters weight decay applies to.

        "matrices" (nanoGPT): weight matrices and embeddings decay; biases, norm gains and the
        learned slot k', v' and sink token do not. "all": every parameter decays (AdamW's default
        on `model.parameters()`). "none": nothing decays.

            >>> m = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
            >>> [(len(g["params"]), g["weight_decay"]) for g in m.optimizer_groups(0.1)]
            [(6, 0.1), (10, 0.0)]
        """
        if decay not in DECAY:
            raise MassiveError(f"decay={decay!r} is not one of {', '.join(DECAY)}")
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if decay != "matrices":
            return [{"params": [p for _, p in params], "weight_decay": weight_decay if decay == "all" else 0.0}]
        matrices, rest = [], []
        for name, p in params:
            slot = name.endswith(("k_bias", "v_bias")) or name == "sink"
            (matrices if p.dim() >= 2 and not slot else rest).append(p)
        return [{"params": matrices, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
