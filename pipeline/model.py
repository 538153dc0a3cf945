"""Loading a fetched model, and finding its parts from the architecture.

The block stack, the final norm and each block's attention module are found by structure, not
by name lists per family: the block stack is the first nn.ModuleList (in module order) whose
length is the config's number of layers, the final norm is the first norm module registered
after that list, among its siblings or, failing those, its parent's siblings (a ViT's
`layernorm` / `post_layernorm` beside its `encoder`), and a block's attention module is its one child whose name contains "attn" or
"attention" and is not a norm. So any Hugging Face decoder of a known architecture
(llama, mistral, mixtral, phi, gpt2, qwen2, gemma, ...) or vision transformer (clip_vision_model,
dinov2, dinov2_with_registers, vit_mae, vit, ...) needs a YAML file and no code.

Every captured tensor is named TransformerLens-style: `blocks.{L}.hook_resid_post` is the
residual stream after block L (the output of the block, after both residual adds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from pipeline.cli import PipelineError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MARKER = "fetched.json"  # written by fetch_model: where the Hugging Face directory is


def resid_post(layer: int) -> str:
    """The hook name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


@dataclass
class Parts:
    blocks: nn.ModuleList
    final_norm: nn.Module | None
    attentions: list[nn.Module]


def num_layers(config) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    text = getattr(config, "text_config", None)
    if text is not None:
        return num_layers(text)
    raise PipelineError(f"cannot tell the number of layers of model_type={config.model_type!r}")


def max_positions(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return None


def find_parts(model: nn.Module) -> Parts:
    n = num_layers(model.config)
    stacks = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList) and len(mod) == n]
    if not stacks:
        raise PipelineError(f"no stack of {n} blocks found in {type(model).__name__}")
    name, blocks = stacks[0]
    final_norm = None
    path = name.split(".")
    while path and final_norm is None:  # the stack's siblings, then its parent's siblings
        child = path.pop()
        parent = model.get_submodule(".".join(path)) if path else model
        names = [k for k, _ in parent.named_children()]
        after = names[names.index(child) + 1 :]
        norms = [getattr(parent, k) for k in after if "norm" in k.lower() or k in ("ln_f",)]
        final_norm = norms[0] if norms else None
    attentions = []
    for i, block in enumerate(blocks):
        attn = [m for k, m in block.named_children()
                if ("attn" in k.lower() or "attention" in k.lower()) and "norm" not in k.lower() and not k.startswith("ln")]
        if len(attn) != 1:
            raise PipelineError(f"block {i} of {type(model).__name__} has {len(attn)} attention children, expected 1")
        attentions.append(attn[0])
    return Parts(blocks=blocks, final_norm=final_norm, attentions=attentions)


def hf_dir(cfg: DictConfig) -> Path:
    """The Hugging Face directory fetch_model recorded for this model."""
    from pipeline.io import model_dir

    marker = model_dir(cfg) / MARKER
    if not marker.exists():
        raise PipelineError(f"model {cfg.model.name!r} is not fetched: {marker} missing (run the fetch_model rule)")
    return Path(json.loads(marker.read_text())["hf_dir"])


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(cfg: DictConfig):
    from transformers import AutoTokenizer

    path = hf_dir(cfg)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot load the tokenizer of {cfg.model.name!r} from {path}: {str(exc).splitlines()[0]}") from None


def model_class(cfg: DictConfig):
    """The transformers class that loads the model: model.auto_class (AutoModelForCausalLM when null)."""
    import transformers

    name = cfg.model.auto_class or "AutoModelForCausalLM"
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise PipelineError(f"model.auto_class={name!r} is not a transformers model class")
    return cls


def load_head(model, cfg: DictConfig) -> None:
    """Load the fetched linear head (model.head) into the model's `classifier`."""
    from pipeline.io import model_dir

    path = json.loads((model_dir(cfg) / MARKER).read_text()).get("head")
    classifier = getattr(model, "classifier", None)
    if path is None or classifier is None:
        raise PipelineError(f"model.head is set but {'it was not fetched' if path is None else type(model).__name__ + ' has no classifier'}"
                            f" (model {cfg.model.name!r}; a head needs auto_class=AutoModelForImageClassification)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        classifier.load_state_dict(state)
    except RuntimeError as exc:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise PipelineError(f"model.head={cfg.model.head!r} ({shapes}) does not fit the classifier {classifier}") from None


def load_model(cfg: DictConfig, device: torch.device | None = None, attn_implementation: str | None = None):
    """The model in eval mode, in the config's dtype, on `device` (or sharded by device_map)."""
    from omegaconf import OmegaConf

    path = hf_dir(cfg)
    cls = model_class(cfg)
    kwargs = dict(dtype=DTYPES[cfg.model.dtype.value if hasattr(cfg.model.dtype, "value") else cfg.model.dtype],
                  trust_remote_code=cfg.model.trust_remote_code,
                  **OmegaConf.to_container(cfg.model.config_overrides))
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    use_map = cfg.model.device_map and torch.cuda.is_available()
    if use_map:
        kwargs["device_map"] = cfg.model.device_map
    try:
        model = cls.from_pretrained(path, **kwargs)
    except Exception as exc:  # a missing or corrupt weights file: transformers raises many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"cannot load the weights of {cfg.model.name!r} from {path}: {first}") from None
    if cfg.model.head:
        load_head(model, cfg)
    if not use_map and device is not None:
        model.to(device)
    model.eval()
    return model
