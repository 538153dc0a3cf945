"""What tests/unit/test_attention.py and tests/rules/test_attention_rule.py share: tiny models of more families
(gemma, gemma2) and a wired attention sink on a planted activation."""

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from massive.core.arch import find_parts

import tiny

LAYER, DIM = 1, 7  # tiny.plant: dim 7 is massive at the first token (token id 0) from block 1's output on
CONST, CONST_VALUE = 20, 0.1  # wire_sink: a residual dim held at 0.1 for every token


def build(family: str) -> nn.Module:
    """tiny.build, plus gemma and gemma2 (soft-capped logits, sliding windows) at the same size."""
    if family not in ("gemma", "gemma2"):
        return tiny.build(family)
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(
        family,
        hidden_size=tiny.D,
        intermediate_size=tiny.I,
        num_hidden_layers=tiny.L,
        num_attention_heads=tiny.H,
        num_key_value_heads=2,
        head_dim=tiny.D // tiny.H,
        vocab_size=tiny.VOCAB,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **({"sliding_window": 8} if family == "gemma2" else {}),
    )
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def wire_sink(model: nn.Module, gain: float = 2.0) -> nn.Module:
    """Make later blocks attend to a token that carries a large DIM: what trained models learn.

    In a random-init model attention is near uniform whatever the residual stream holds, so
    tiny.plant alone moves no attention. This adds the two ingredients of a sink by hand:
    a query component every token shares (residual dim CONST held at CONST_VALUE: set in the embedding,
    written by no layer) and, in the blocks after LAYER, one query/key coordinate per head that
    reads CONST on the query side and DIM on the key side (the last coordinate of the head:
    rotary turns it at its slowest frequency, or not at all for phi's partial rotary). The key
    there is large only where DIM is large: the logit to a token is ~ gain^2 * its normalised DIM.
    The same wiring is applied to the model with and without the plant, so any difference in
    attention comes from the planted activation."""
    model.get_input_embeddings().weight[:, CONST] = CONST_VALUE
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod.out_features == tiny.D:
            mod.weight[CONST, :] = 0.0
            if mod.bias is not None:
                mod.bias[CONST] = 0.0
    for name, p in model.named_parameters():
        if name.endswith("experts.down_proj"):
            p[:, CONST, :] = 0.0
    for attn in find_parts(model).attentions[LAYER + 1 :]:
        hd = attn.head_dim
        for proj, source in ((attn.q_proj, CONST), (attn.k_proj, DIM)):
            for h in range(proj.out_features // hd):
                row = h * hd + hd - 1
                proj.weight[row, :] = 0.0
                proj.weight[row, source] = gain
                if proj.bias is not None:
                    proj.bias[row] = 0.0
    return model
