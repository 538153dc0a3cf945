"""The config -> library adapter for loading: the model fetch_model recorded, loaded with the
options of the composed config (model.dtype, model.auto_class, model.config_overrides, ...).

    >>> from pipeline.model import load_model, load_tokenizer, protocol
    >>> model, tok = load_model(cfg, device), load_tokenizer(cfg)
    >>> protocol(cfg, tok).name      # model.bos resolved with the tokenizer: "bos" or "no_bos"
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from massive import models
from massive.errors import MassiveError
from massive.sequences import Protocol, resolve

MARKER = "fetched.json"  # written by fetch_model: where the Hugging Face directory is
pick_device = models.pick_device


def _value(x):
    return x.value if hasattr(x, "value") else x


def marker(cfg: DictConfig) -> dict:
    """What fetch_model recorded for this model (hf_dir, source, name, head)."""
    from pipeline.io import model_dir

    path = model_dir(cfg) / MARKER
    if not path.exists():
        raise MassiveError(f"model {cfg.model.name!r} is not fetched: {path} missing (run the fetch_model rule)")
    return json.loads(path.read_text())


def hf_dir(cfg: DictConfig) -> Path:
    """The Hugging Face directory fetch_model recorded for this model."""
    return Path(marker(cfg)["hf_dir"])


def load_tokenizer(cfg: DictConfig):
    """The fetched model's tokenizer."""
    return models.load_tokenizer(hf_dir(cfg), cfg.model.trust_remote_code, name=cfg.model.name)


def protocol(cfg: DictConfig, tok=None) -> Protocol:
    """How every sequence of this run begins: model.bos resolved with the model's tokenizer
    (massive.sequences.resolve; `tok` saves loading it). Resolved once per run and kept in
    cfg.protocol, so every table the run writes records it (pipeline.io.provenance).
    model.bos=always for a tokenizer without a BOS token is a one-line error."""
    if cfg.get("protocol") is not None:
        return Protocol(**{k: v for k, v in OmegaConf.to_container(cfg.protocol).items() if k in Protocol.__dataclass_fields__})
    p = resolve(load_tokenizer(cfg) if tok is None else tok, _value(cfg.model.bos), name=repr(cfg.model.name))
    with open_dict(cfg):
        cfg.protocol = p.record()
    return p


def load_model(cfg: DictConfig, device: torch.device | None = None, attn_implementation: str | None = None):
    """The fetched model in eval mode, in model.dtype, on `device` (or sharded by model.device_map)."""
    m = cfg.model
    head = None
    if m.head:
        head = marker(cfg).get("head")
        if head is None:
            raise MassiveError(f"model.head is set but it was not fetched (model {m.name!r}; run the fetch_model rule)")
    model = models.load_model(hf_dir(cfg), dtype=_value(m.dtype), device=None, auto_class=m.auto_class,
                              attn_implementation=attn_implementation, trust_remote_code=m.trust_remote_code,
                              config_overrides=OmegaConf.to_container(m.config_overrides), device_map=m.device_map,
                              name=m.name)
    if head is not None:
        models.load_head(model, head, label=m.head)
    if device is not None and not (m.device_map and torch.cuda.is_available()):
        model.to(device)
    return model
