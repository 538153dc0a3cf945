"""What tests/unit/test_retrofit.py and tests/rules/test_retrofit_rule.py share: a tiny llama with a planted
attention sink, sequences drawn from it, and its detection (the module-scoped sink fixture)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import massive
from massive.core import arch

import tiny

SINK_DIM, ON_DIM = 5, 9


@torch.no_grad()
def plant_sink(model: nn.Module, strength: float = 4.0, sharp: float = 8.0) -> nn.Module:
    """A massive activation at token 0 after block 0 (tiny.plant) that every later head attends to:
    a constant "on" dim feeds each head's query, the massive dim feeds its key, in the lowest
    rotary frequency (so the match holds at every position). The unembedding is sharpened so that
    what attention reads shows in the loss."""
    tiny.plant(model, 0, SINK_DIM, token_id=0)
    emb = model.get_input_embeddings().weight
    emb[:, ON_DIM] = 1.0
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod.out_features == tiny.D and mod is not model.lm_head:
            mod.weight[ON_DIM, :] = 0.0
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    dh = tiny.D // heads
    for attn in arch.find_parts(model).attentions[1:]:
        for h in range(heads):
            attn.q_proj.weight[h * dh + dh // 2 - 1] = 0.0
            attn.q_proj.weight[h * dh + dh // 2 - 1, ON_DIM] = strength
        for h in range(kv_heads):
            attn.k_proj.weight[h * dh + dh // 2 - 1] = 0.0
            attn.k_proj.weight[h * dh + dh // 2 - 1, SINK_DIM] = strength
    model.lm_head.weight.mul_(sharp)
    return model


@torch.no_grad()
def sample(model: nn.Module, n: int, seq_len: int, seed: int) -> torch.Tensor:
    """Sequences drawn from the model itself, token 0 first and nowhere else: data it predicts best."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, 1, dtype=torch.long)
    for _ in range(seq_len - 1):
        logits = model(input_ids=ids).logits[:, -1]
        logits[:, 0] = float("-inf")
        ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=g)], 1)
    return ids


@pytest.fixture(scope="module")
def sink():
    torch.manual_seed(0)
    model = plant_sink(tiny.build("llama"))
    train, held = sample(model, 48, 20, 1), sample(model, 12, 20, 2)
    found = massive.detect(massive.capture(model, held[:8], k=16))
    return model, train, held, found
