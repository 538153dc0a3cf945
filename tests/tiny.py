"""Tiny random-init models of each paper family, with an optional planted massive activation.

`plant` edits the weights so that feature dim `dim` of the residual stream becomes huge after
block `layer`, at every position holding token `token_id`, and nowhere else:
  1. a "carrier" dim is made exactly zero in every token's residual stream but `token_id`'s: the
     embedding column is zeroed except for that token, and every weight that writes into the
     residual stream (any output of width hidden_size) gets its carrier row zeroed;
  2. in block `layer`'s MLP, one hidden unit reads only the carrier dim and writes only `dim`,
     with a large gain (and, where the MLP has biases, a negative bias so that the LayerNorm
     families stay silent at other tokens).
Since the residual stream carries the result on, it stays present in every later block.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from massive.core.arch import find_parts
from massive.core.models import byte_tokenizer

D, I, L, H, VOCAB = 64, 128, 4, 4, 258
FAMILIES = ["llama", "mistral", "mixtral", "phi", "gpt2"]


def config(family: str):
    if family == "gpt2":
        return AutoConfig.for_model(
            "gpt2",
            n_embd=D,
            n_inner=I,
            n_layer=L,
            n_head=H,
            n_positions=256,
            vocab_size=VOCAB,
            bos_token_id=0,
            eos_token_id=1,
        )
    extra = {"num_local_experts": 4, "num_experts_per_tok": 2} if family == "mixtral" else {}
    return AutoConfig.for_model(
        family,
        hidden_size=D,
        intermediate_size=I,
        num_hidden_layers=L,
        num_attention_heads=H,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        **extra,
    )


def build(family: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config(family), dtype=torch.float32, attn_implementation="eager")
    return model.eval()


@torch.no_grad()
def plant(
    model: nn.Module, layer: int, dim: int, token_id: int = 0, carrier: int | None = None, gain: float = 200.0
) -> nn.Module:
    carrier = (dim + 1) % D if carrier is None else carrier
    emb = model.get_input_embeddings().weight
    emb[:, carrier] = 0.0
    emb[token_id, carrier] = 4.0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.out_features == D:
            mod.weight[carrier, :] = 0.0
            if mod.bias is not None:
                mod.bias[carrier] = 0.0
        elif isinstance(mod, Conv1D) and mod.nf == D:
            mod.weight[:, carrier] = 0.0
            mod.bias[carrier] = 0.0
        elif isinstance(mod, nn.Embedding) and mod is not model.get_input_embeddings() and mod.embedding_dim == D:
            mod.weight[:, carrier] = 0.0  # learned positions (gpt2)
    for name, p in model.named_parameters():
        if name.endswith("experts.down_proj"):
            p[:, carrier, :] = 0.0
    block = find_parts(model).blocks[layer]
    mlp = block.mlp
    j = 0  # the planted hidden unit
    for mod in mlp.modules():
        if isinstance(mod, nn.Linear) and mod.in_features == D and mod.out_features == I:  # up side
            mod.weight[j, :] = 0.0
            mod.weight[j, carrier] = 1.0
            if mod.bias is not None:
                mod.bias[j] = -3.0
        elif isinstance(mod, nn.Linear) and mod.in_features == I and mod.out_features == D:  # down side
            mod.weight[:, j] = 0.0
            mod.weight[dim, j] = gain
        elif isinstance(mod, Conv1D) and mod.nf == I:
            mod.weight[:, j] = 0.0
            mod.weight[carrier, j] = 1.0
            mod.bias[j] = -3.0
        elif isinstance(mod, Conv1D) and mod.nf == D and mod.weight.shape[0] == I:
            mod.weight[j, :] = 0.0
            mod.weight[j, dim] = gain
    for name, p in mlp.named_parameters():
        if name.endswith("experts.gate_up_proj"):  # [experts, 2 * I, D]: gate rows then up rows
            for row in (j, I + j):
                p[:, row, :] = 0.0
                p[:, row, carrier] = 1.0
        elif name.endswith("experts.down_proj"):  # [experts, D, I]
            p[:, :, j] = 0.0
            p[:, dim, j] = gain
    return model


def save(model: nn.Module, path, add_bos: bool = False) -> str:
    """The model and a byte tokenizer (`add_bos`: one that adds its BOS, id 0, by default)."""
    model.save_pretrained(path)
    byte_tokenizer(add_bos=add_bos).save_pretrained(path)
    return str(path)


@torch.no_grad()
def plant_everywhere(model: nn.Module, dim: int, value: float = 5000.0) -> nn.Module:
    """An outlier feature: dim `dim` of every token's embedding set to `value`, so the residual
    stream carries it, large at every token, after every block."""
    model.get_input_embeddings().weight[:, dim] = value
    return model


def sequences(n: int, seq_len: int, seed: int = 0, first: int = 0) -> torch.Tensor:
    """Random byte tokens, with token `first` at position 0 and nowhere else."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n, seq_len), generator=g)
    ids[:, 0] = first
    return ids


# ---------------------------------------------------------------- vision transformers
# Tiny random ViTs of each family of the paper's vision experiments: 32x32 images, 8x8 patches
# (a 4x4 grid), 4 register tokens where the family has them.
VIT_FAMILIES = ["clip_vision_model", "dinov2_with_registers", "dinov2", "vit_mae"]
IMAGE, PATCH, REGISTERS = 32, 8, 4
VIT_CLASSES = {
    "clip_vision_model": "CLIPVisionModel",
    "dinov2_with_registers": "AutoModel",
    "dinov2": "AutoModel",
    "vit_mae": "AutoModel",
}


def vit_config(family: str):
    extra = {"dinov2_with_registers": {"num_register_tokens": REGISTERS}, "vit_mae": {"mask_ratio": 0.0}}.get(
        family, {}
    )
    return AutoConfig.for_model(
        family,
        hidden_size=D,
        intermediate_size=I,
        num_hidden_layers=L,
        num_attention_heads=H,
        image_size=IMAGE,
        patch_size=PATCH,
        **extra,
    )


def build_vit(family: str, seed: int = 0) -> nn.Module:
    import transformers

    torch.manual_seed(seed)
    cls = getattr(transformers, VIT_CLASSES[family])
    config = vit_config(family)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)
    return model.float().eval()


def image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": IMAGE, "width": IMAGE})


def save_vit(model: nn.Module, path) -> str:
    model.save_pretrained(path)
    image_processor().save_pretrained(path)
    return str(path)


@torch.no_grad()
def plant_vit(
    model: nn.Module,
    layer: int,
    dim: int,
    register: int | None = None,
    carrier: int | None = None,
    gain: float = 2000.0,
) -> nn.Module:
    """Plant a massive activation in dim `dim` after block `layer`, at register token `register`
    (or at the CLS token when None), as `plant` does for LLMs: a carrier dim is nonzero only in
    that token's embedding, and one MLP unit of block `layer` reads it and writes `dim`."""
    carrier = (dim + 1) % D if carrier is None else carrier
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("cls_token", "class_embedding", "register_tokens", "mask_token", "position_embeddings"):
            p[..., carrier] = 0.0
        elif name.endswith("position_embedding.weight"):
            p[:, carrier] = 0.0
    source = dict(model.named_parameters())
    if register is not None:
        key = next(k for k in source if k.endswith("register_tokens"))
        source[key][0, register, carrier] = 4.0
    else:
        key = next(k for k in source if k.endswith(("cls_token", "class_embedding")))
        source[key].view(-1, D)[0, carrier] = 4.0
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d) and mod.out_channels == D:  # the patch embedding
            mod.weight[carrier] = 0.0
            if mod.bias is not None:
                mod.bias[carrier] = 0.0
        elif isinstance(mod, nn.Linear) and mod.out_features == D:
            mod.weight[carrier, :] = 0.0
            if mod.bias is not None:
                mod.bias[carrier] = 0.0
    block = find_parts(model).blocks[layer]
    ups = [m for m in block.modules() if isinstance(m, nn.Linear) and m.in_features == D and m.out_features > D]
    downs = [m for m in block.modules() if isinstance(m, nn.Linear) and m.in_features > D and m.out_features == D]
    j = 0
    ups[0].weight[j, :] = 0.0
    ups[0].weight[j, carrier] = 1.0
    ups[0].bias[j] = -3.0
    downs[0].weight[:, j] = 0.0
    downs[0].weight[dim, j] = gain
    return model


def photos(n: int, seed: int = 0) -> list:
    """n random RGB images (PIL), 48x40 pixels: the processor resizes them."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return [
        Image.fromarray(torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8).numpy()) for _ in range(n)
    ]


# ---------------------------------------------------------------- every family (massive.core.families' tiny configs)
from massive.core.families import plant as plant_family  # noqa: E402, F401  (the same planting for any family)
