"""Every causal-LM family of the installed transformers, as a tiny random model: which the
library supports, and why it refuses the others.

`tiny_config(model_type)` is the family's own default config with every size field it has shrunk
(2 blocks, residual width 64, 4 heads of 16, 2 key/value heads, MLP width 128, 4 experts of
which 2 routed, a 258-token vocabulary): whatever the field is called in that family
(hidden_size / n_embd / d_model, num_hidden_layers / n_layer, ...). Nothing per family is typed
in beyond the names of size fields. `refusal(config)` is the one line saying why a family cannot
be measured (an encoder-decoder, an encoder, a state-space or recurrent model with no attention),
or None.

    >>> from massive import families
    >>> model = families.build("gemma2")
    >>> families.refusal(families.tiny_config("mamba"))
    "model_type='mamba': a state-space model with no attention layer (no attention to analyse, no block of attention + MLP)"
"""

from __future__ import annotations

import torch
from torch import nn

D, HEADS, KV_HEADS, HEAD_DIM, MLP, LAYERS, EXPERTS, ROUTED, VOCAB = 64, 4, 2, 16, 128, 2, 4, 2, 258

# size field -> tiny value: set where the family's config has the field
SIZES = {
    "hidden_size": D, "n_embd": D, "d_model": D, "dim": D, "model_dim": D,
    "num_hidden_layers": LAYERS, "n_layer": LAYERS, "num_layers": LAYERS, "n_layers": LAYERS,
    "num_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS, "num_heads": HEADS,
    "num_key_value_heads": KV_HEADS, "n_kv_heads": KV_HEADS, "num_kv_heads": KV_HEADS, "multi_query_group_num": KV_HEADS,
    "head_dim": HEAD_DIM, "kv_channels": HEAD_DIM,
    "intermediate_size": MLP, "n_inner": MLP, "ffn_dim": MLP, "ffn_hidden_size": MLP, "d_ff": MLP,
    "moe_intermediate_size": MLP // 2, "shared_expert_intermediate_size": MLP // 2, "expert_intermediate_size": MLP // 2,
    "num_local_experts": EXPERTS, "num_experts": EXPERTS, "n_routed_experts": EXPERTS, "moe_num_experts": EXPERTS,
    "num_experts_per_tok": ROUTED, "moe_k": ROUTED, "num_experts_per_token": ROUTED, "top_k_experts": ROUTED,
    "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "vocab_size": VOCAB, "max_position_embeddings": 256, "n_positions": 256, "n_ctx": 256, "seq_length": 256,
    "sliding_window": 8, "rotary_dim": 8, "partial_rotary_factor": 0.5,
    "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
    # multi-head latent attention (DeepSeek-V2/V3): queries and keys wider than values
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
    # hybrids (Qwen3-Next: linear attention every layer but the last of each `full_attention_interval`)
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
    "full_attention_interval": 2,
}
NO_ATTENTION = ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm")


def _shrink(config) -> None:
    for key, value in SIZES.items():
        if key in config.to_dict() or hasattr(config, key):
            current = getattr(config, key, None)
            if key == "rotary_dim" and current is None:
                continue
            if key == "partial_rotary_factor" and current in (None, 1.0):
                continue
            if key == "sliding_window" and current is None:
                continue
            if key == "eos_token_id" and isinstance(current, list):
                value = [value]
            try:
                setattr(config, key, value)
            except (AttributeError, TypeError, ValueError):
                pass
    if getattr(config, "qk_rope_head_dim", None) and hasattr(config, "head_dim"):
        config.head_dim = config.qk_rope_head_dim  # multi-head latent attention: rotary on the rope part only
    if getattr(config, "kv_lora_rank", None) and hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = config.num_attention_heads  # its keys are per head (no grouped queries)
    for key in ("layer_types", "mlp_layer_types", "layers_block_type"):
        types = getattr(config, key, None)
        if isinstance(types, (list, tuple)) and len(types) != LAYERS:
            setattr(config, key, _layer_types(config, key, types))


def _layer_types(config, key: str, types) -> list:
    """The first LAYERS entries, keeping one of each kind where there are two (sliding + full attention, linear + full)."""
    kinds = list(dict.fromkeys(types))
    if len(kinds) >= 2:
        return [kinds[0]] * (LAYERS - 1) + [kinds[1]]
    return list(types[:LAYERS])


def tiny_config(model_type: str):
    """The family's default config with its size fields shrunk (a text_config too, for multimodal wrappers)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    _shrink(config)
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        _shrink(text)
    return config


def refusal(config) -> str | None:
    """None when the family can be measured, else one line naming it and why not."""
    t = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        return f"model_type={t!r}: an encoder-decoder (the library measures decoder-only residual streams)"
    if t in NO_ATTENTION or (getattr(config, "attn_layer_indices", None) == [] and "mamba" in t):
        return f"model_type={t!r}: a state-space or recurrent model with no attention layer (no attention to analyse)"
    return None


def build(model_type: str, seed: int = 0, config=None) -> nn.Module:
    """A tiny random float32 causal LM of the family, in eval mode, with eager attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = config or tiny_config(model_type)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    return model.eval()
