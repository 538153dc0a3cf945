"""What a Hugging Face config says, read the same way for every family, without torch: the number
of blocks, the residual width, the longest sequence, a ViT's vision part and patch size
(massive.core.arch re-exports these; the pipeline's checks read them before anything is loaded)."""

from __future__ import annotations

from massive.core.errors import MassiveError


def num_layers(config) -> int:
    """The number of blocks (num_hidden_layers, n_layer or num_layers; a text_config's for multimodal configs)."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    text = getattr(config, "text_config", None)
    if text is not None:
        return num_layers(text)
    raise MassiveError(f"cannot tell the number of layers of model_type={config.model_type!r}")


def hidden_size(config) -> int:
    """The width of the residual stream."""
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    for sub in ("text_config", "vision_config"):
        if getattr(config, sub, None) is not None:
            return hidden_size(getattr(config, sub))
    raise MassiveError(f"cannot tell the hidden size of model_type={config.model_type!r}")


def max_positions(config) -> int | None:
    """The longest sequence the model's positions allow (None when the config does not say)."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return None


def vision_config(config):
    """The vision part of a config (CLIP's vision_config), or the config itself."""
    return getattr(config, "vision_config", None) or config


def patch_size(config) -> int:
    p = vision_config(config).patch_size
    return p if isinstance(p, int) else p[0]
