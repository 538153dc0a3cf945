"""Cluster sizing of every GPU job from its model: GPUs, host memory and time limit.

A job's GPU memory is the model's parameter count times the bytes per parameter of the dtype the
rule loads it in, times what the rule holds (capture, ablate, attention, origins, zero-shot: the
weights plus one batch; inference: the float32 reference plus one cast copy), plus one batch of
activations. Its GPUs are that over the usable memory of one GPU (device_map=auto spreads a model
over all GPUs of its job); its time limit follows its work: the forward tokens the rule pushes
through the model (sequences, chunks, interventions, images, zero-shot requests) at a stated
throughput, plus loading the weights, with a margin.

The parameter count comes from, first found:
  1. model.sizing.params (the model YAML, or a sweep's model_overrides)
  2. the fetched model: cache/models/<name>/fetched.json -> its config.json (and the weights' size)
  3. the model's config.json before the fetch: model.path (local), model.arch (random), or the
     Hugging Face hub (huggingface_hub.hf_hub_download: the local HF cache first, only config.json
     and the safetensors index are downloaded; HF_HUB_OFFLINE=1 reads the cache alone)
and is counted from the config (params_from_config: embeddings, attention with grouped KV heads,
gated or plain MLPs, experts; within about 1% of the weights for the paper's models). A model
that none of these sizes is an error naming it and the ways to size it: never a silent default.
model.sizing.gpus / mem_mb / runtime_factor override the result per model.

The SLURM profile (profiles/slurm/config.yaml) calls `resource` for each GPU job; scripts/estimate.py
prints the plan's totals from the same numbers.

    >>> params_from_config({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    ...                     "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
    ...                     "hidden_act": "silu", "tie_word_embeddings": False})
    6738149376
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from massive.core.errors import MassiveError
from pipeline.names import plain

GPU_RULES = ("capture", "ablate", "zeroshot", "attention", "origins", "retrofit", "inference", "ablate_images")
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}
GATED_ACTS = ("silu", "swish", "swiglu")  # gated MLPs (up, gate, down): LLaMA, Mistral, Mixtral, Qwen, ...
GIB = 1024**3


@dataclass(frozen=True)
class Site:
    """What one GPU of the cluster offers (the profile's site settings)."""

    gpu_mem_gb: float = 80.0  # memory of one GPU of the GPU type the jobs request
    gpus_per_node: int = 8  # the most GPUs one job may ask for (device_map spreads within a node)
    tflops: float = 50.0  # sustained half-precision throughput of one GPU (float32: a quarter)
    read_gbps: float = 0.5  # reading the weights from the shared filesystem, GB/s
    margin: float = 2.0  # the time limit is this multiple of the expected time

    @classmethod
    def from_env(cls) -> "Site":
        env = {
            "gpu_mem_gb": ("MA_SLURM_GPU_MEM_GB", float),
            "gpus_per_node": ("MA_SLURM_GPUS_PER_NODE", int),
            "tflops": ("MA_SLURM_GPU_TFLOPS", float),
        }
        values = {}
        for key, (var, kind) in env.items():
            raw = os.environ.get(var, "").strip()
            if raw:
                try:
                    values[key] = kind(raw)
                except ValueError:
                    raise MassiveError(f"{var}={raw!r} is not a number") from None
                if values[key] <= 0:
                    raise MassiveError(f"{var}={raw!r} must be positive")
        return cls(**values)


@dataclass(frozen=True)
class Weights:
    """A model's size: parameters, the config it was counted from, the download."""

    params: int
    download_bytes: int  # the weights as stored (safetensors on disk or in the index, else params x stored dtype)
    source: str  # where the count came from
    config: dict  # the config.json (empty when the count came from model.sizing.params)


@dataclass(frozen=True)
class JobSize:
    rule: str
    model: str
    gpus: int
    gpu_gb: float  # GPU memory the job needs, GB
    mem_mb: int  # host memory
    runtime: int  # minutes
    tokens: float  # forward tokens of the job's work


# ---------------------------------------------------------------- the parameter count
def _get(config: dict, *keys, default=None):
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def params_from_config(config: dict) -> int:
    """Parameters of a transformer from its Hugging Face config.json: embeddings, blocks (attention
    with grouped KV heads, MLP gated or not, experts), the LM head unless tied. Biases and norms are
    left out (under 0.1% at these sizes). Composite configs (CLIP: text_config + vision_config) add
    their parts. Raises MassiveError when the config names no width or depth."""
    parts = [config[k] for k in ("text_config", "vision_config") if isinstance(config.get(k), dict)]
    if parts and _get(config, "hidden_size", "n_embd", "d_model") is None:
        return sum(params_from_config(p) for p in parts)
    h = _get(config, "hidden_size", "n_embd", "d_model", "dim")
    layers = _get(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    if not h or not layers:
        raise MassiveError(f"config.json (model_type {config.get('model_type')!r}) names no hidden size or layer count")
    heads = _get(config, "num_attention_heads", "n_head", "num_heads", default=1)
    kv = _get(config, "num_key_value_heads", "n_kv_heads", default=heads) or heads
    head_dim = _get(config, "head_dim", default=h // heads)
    inter = _get(config, "intermediate_size", "n_inner", "ffn_dim")
    if inter is None:
        inter = int(_get(config, "mlp_ratio", default=4) * h)
    act = str(_get(config, "hidden_act", "activation_function", "hidden_activation", default="")).lower()
    gated = act in GATED_ACTS or "gemma" in str(config.get("model_type", ""))
    # DINOv2's SwiGLU keeps the parameters of a plain MLP of the same ratio (hidden = 2/3 of it)
    mlp = (3 if gated else 2) * h * inter
    experts = _get(config, "num_local_experts", "num_experts", "n_routed_experts", default=1) or 1
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    block = attn + mlp * experts + (h * experts if experts > 1 else 0)
    vocab = _get(config, "vocab_size", default=0) or 0
    tied = config.get("tie_word_embeddings", True)
    embed = vocab * h * (1 if tied or not vocab else 2)
    if config.get("n_positions") and not config.get("rotary_dim"):  # learned positions (GPT-2)
        embed += config["n_positions"] * h
    patch = _get(config, "patch_size")
    if patch and not vocab:  # a ViT: patch embedding and positions
        size = _get(config, "image_size", default=224)
        size = size[0] if isinstance(size, (list, tuple)) else size
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        embed += _get(config, "num_channels", default=3) * patch * patch * h + ((size // patch) ** 2 + 1) * h
    return int(layers * block + embed)


def active_params(config: dict, params: int) -> int:
    """Parameters one token passes through: all of them, but for a mixture of experts only the
    experts each token is routed to (Mixtral-8x7B: about 13B of 47B)."""
    experts = _get(config, "num_local_experts", "num_experts", "n_routed_experts", default=1) or 1
    top = _get(config, "num_experts_per_tok", "moe_top_k", default=experts) or experts
    if experts <= 1 or top >= experts:
        return params
    h = _get(config, "hidden_size", "n_embd", "d_model", default=0)
    inter = _get(config, "intermediate_size", "moe_intermediate_size", default=4 * h)
    layers = _get(config, "num_hidden_layers", "n_layer", "num_layers", default=0)
    return int(params - layers * (experts - top) * 3 * h * inter)


def tokens_per_image(config: dict) -> int:
    """Tokens a ViT sees per image: the patches of the image processors' 224-pixel crop (DINOv2's
    config names the 518 pixels its position embeddings cover), the class token and the registers."""
    config = config.get("vision_config", config)
    size = _get(config, "image_size", default=224)
    size = min(224, size[0] if isinstance(size, (list, tuple)) else size)
    patch = _get(config, "patch_size", default=16)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return (size // patch) ** 2 + 1 + int(config.get("num_register_tokens") or 0)


def _stored_dtype(config: dict, fallback: str) -> str:
    """The dtype the weights are stored in (config.json's torch_dtype; float32 where it names none, as GPT-2's)."""
    dtype = str(_get(config, "torch_dtype", "dtype", default=fallback)).replace("torch.", "")
    return dtype if dtype in BYTES else fallback


def _index_bytes(path: Path | None) -> int | None:
    if path and path.is_file():
        total = (json.loads(path.read_text()).get("metadata") or {}).get("total_size")
        return int(total) if total else None
    return None


def _from_dir(hf: Path, source: str, dtype: str) -> Weights:
    config = json.loads((hf / "config.json").read_text())
    params = params_from_config(config)
    on_disk = sum(p.stat().st_size for p in hf.glob("*.safetensors")) or sum(p.stat().st_size for p in hf.glob("*.bin"))
    download = (
        on_disk or _index_bytes(hf / "model.safetensors.index.json") or params * BYTES[_stored_dtype(config, "float32")]
    )
    return Weights(params, int(download), source, config)


def _fetched_dir(marker: Path, root: Path) -> Path | None:
    """The Hugging Face directory fetch_model recorded, when it holds a config.json (a marker that is
    not fetch_model's JSON, or a directory since moved, counts as not fetched)."""
    try:
        hf = Path(json.loads(marker.read_text())["hf_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    hf = hf if hf.is_absolute() else root / hf
    return hf if (hf / "config.json").is_file() else None


def _hub_file(hub_id: str, name: str, revision: str | None) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(hub_id, name, revision=revision))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def weights(model: Any, root: str | Path = ".") -> Weights:
    """The size of `model` (a composed model config: model.name, source, hub_id, path, arch, dtype,
    sizing) as far as it can be known now; `root`: the working directory (cache/models/)."""
    from pipeline import paths

    dtype = plain(model.dtype)
    sizing = model.get("sizing") or {}
    if sizing.get("params"):
        params = int(float(sizing["params"]))
        return Weights(params, params * BYTES[dtype], "model.sizing.params", {})
    hf = _fetched_dir(Path(root) / paths.fetched(model.name), Path(root))
    if hf is not None:
        return _from_dir(hf, f"the fetched {hf / 'config.json'}", dtype)
    source = plain(model.source)
    try:
        if source == "local" and model.path and (Path(model.path) / "config.json").is_file():
            return _from_dir(Path(model.path), f"{model.path}/config.json", dtype)
        if source == "random" and model.arch:
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(model.arch) if OmegaConf.is_config(model.arch) else dict(model.arch)
            params = params_from_config(config)
            return Weights(params, params * BYTES[dtype], "model.arch", config)
        if source == "hub" and model.hub_id:
            path = _hub_file(model.hub_id, "config.json", model.revision)
            if path is not None:
                config = json.loads(path.read_text())
                params = params_from_config(config)
                index = _index_bytes(_hub_file(model.hub_id, "model.safetensors.index.json", model.revision))
                download = index or params * BYTES[_stored_dtype(config, "float32")]
                return Weights(params, int(download), f"the hub's config.json of {model.hub_id}", config)
    except MassiveError as exc:
        raise MassiveError(f"cannot size model {model.name!r}: {exc}; set model.sizing.params") from None
    except Exception as exc:  # offline, gated, unknown repository
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MassiveError(
            f"cannot size model {model.name!r}: its config.json is not at hand ({type(exc).__name__}: {first}); "
            "log in to the hub (hf auth login), fetch it first (snakemake fetch_model), "
            "or set model.sizing.params"
        ) from None
    raise MassiveError(
        f"cannot size model {model.name!r} (source={source}): no config.json before the fetch; "
        f"fetch it first (snakemake {paths.fetched(model.name)}) or set model.sizing.params"
    )


# ---------------------------------------------------------------- per-rule work and memory
ZEROSHOT_TOKENS_PER_TASK = 1.0e6  # an lm-eval task in full (the paper's five: ~27k requests of ~150 tokens)
ZEROSHOT_TOKENS_PER_EXAMPLE = 600  # with ablate.zeroshot_limit: ~4 choices of ~150 tokens
IMAGE_SECONDS = 0.005  # decoding and preprocessing one image, per pass


def _is_vit(cfg) -> bool:
    from pipeline.config import is_images

    return is_images(cfg.data)


def work(rule: str, cfg, w: Weights) -> tuple[float, float]:
    """(forward tokens, tokens of those in float32) of one job of `rule` with the composed `cfg`."""
    seq = cfg.tokenize.seq_len or cfg.model.seq_len
    if _is_vit(cfg):
        seq = tokens_per_image(w.config) if w.config else 257
    n_seq = cfg.tokenize.num_sequences
    a, o, inf = cfg.ablate, cfg.origins, cfg.inference
    f32 = plain(cfg.model.dtype) == "float32"
    if rule == "capture":
        tokens = n_seq * seq
    elif rule == "ablate":
        tokens = len(a.interventions) * a.max_chunks * seq + n_seq * seq
    elif rule == "zeroshot":
        per_task = a.zeroshot_limit * ZEROSHOT_TOKENS_PER_EXAMPLE if a.zeroshot_limit else ZEROSHOT_TOKENS_PER_TASK
        tokens = len(a.interventions) * max(1, len(a.zeroshot_tasks)) * per_task + n_seq * seq
    elif rule == "attention":
        tokens = 3 * cfg.attention.num_sequences * seq
    elif rule == "origins":
        tokens = len(o.interventions) * o.max_chunks * seq + 2 * o.num_sequences * seq
    elif rule == "retrofit":  # per arm: training steps (forward + backward ~ 3 forwards) and evaluations
        r = cfg.retrofit
        arms = (1 + len(r.variants) + len(r.kept)) * max(1, len(r.seeds))
        evals = r.steps // r.eval_every + 3  # step 0, every eval_every, the set-back and the norms
        tokens = arms * (3 * r.steps * r.batch_size + evals * r.eval_chunks) * r.seq_len
    elif rule == "inference":
        runs = (
            1
            + len(inf.schemes) * (2 if inf.with_mean else 1)
            + len(inf.windows) * (1 + len(inf.sinks) * (1 + len(inf.sink_interventions)))
        )
        reference = runs * inf.max_chunks * seq + inf.num_sequences * seq
        tokens = reference + len(inf.formats) * inf.max_chunks * seq
        return tokens, (reference if plain(inf.dtype) == "float32" else 0)
    elif rule == "ablate_images":
        tokens = len(a.interventions) * a.max_images * seq
    else:
        raise MassiveError(f"no sizing for rule {rule!r} (GPU rules: {', '.join(GPU_RULES)})")
    return tokens, (tokens if f32 else 0)


def _batch_bytes(rule: str, cfg, w: Weights, batch: int, seq: int) -> float:
    """GPU memory of one batch in flight: hidden states and MLP intermediates in float32, the
    logits, and (rule attention) one layer's attention probabilities."""
    c = w.config.get("text_config", w.config) if w.config else {}
    h = _get(c, "hidden_size", "n_embd", "d_model", default=4096)
    inter = _get(c, "intermediate_size", "n_inner", default=4 * h) or 4 * h
    vocab = _get(c, "vocab_size", default=0) or 0
    heads = _get(c, "num_attention_heads", "n_head", default=32)
    per_token = 4 * (8 * h + 3 * inter + 2 * vocab)
    total = batch * seq * per_token
    if rule == "attention":
        total += 2 * batch * heads * seq * seq * 4
    if rule == "retrofit":  # training: every layer's activations are kept for the backward pass
        total *= _get(c, "num_hidden_layers", "n_layer", default=32) or 32
    return total


def size(rule: str, cfg, w: Weights, site: Site | None = None) -> JobSize:
    """GPUs, host memory and time limit of one job of `rule` (composed config `cfg`) on `site`."""
    site = site or Site()
    m, a, inf = cfg.model, cfg.ablate, cfg.inference
    dtype = plain(m.dtype)
    seq = cfg.retrofit.seq_len if rule == "retrofit" else cfg.tokenize.seq_len or m.seq_len
    batch = {
        "capture": cfg.capture.batch_size,
        "ablate": a.batch_size,
        "zeroshot": a.batch_size,
        "attention": 1,
        "origins": cfg.origins.batch_size,
        "inference": inf.batch_size,
        "retrofit": cfg.retrofit.batch_size,
        "ablate_images": a.batch_size,
    }[rule]
    if _is_vit(cfg):
        seq = tokens_per_image(w.config) if w.config else 257
    elif rule == "zeroshot":
        seq = min(seq, 1024)  # lm-eval contexts are short
    if rule == "inference":  # the reference in inference.dtype and one copy cast to each format in turn
        held = w.params * (BYTES[plain(inf.dtype)] + max(BYTES[plain(f)] for f in inf.formats))
        loaded = w.params * BYTES[plain(inf.dtype)]
    else:
        held = loaded = w.params * BYTES[dtype]
    need = held + _batch_bytes(rule, cfg, w, batch, seq) + 1.5 * GIB  # + the CUDA context
    usable = site.gpu_mem_gb * 1e9 * 0.9
    sizing = m.get("sizing") or {}
    gpus = int(sizing.get("gpus") or max(1, math.ceil(need / usable)))
    if gpus > 1 and not m.device_map and not sizing.get("gpus"):
        raise MassiveError(
            f"model {m.name!r}, rule {rule}: needs {need / 1e9:.0f} GB of GPU memory, more than one "
            f"{site.gpu_mem_gb:g} GB GPU, and has no model.device_map to spread it (set model.device_map=auto)"
        )
    if gpus > site.gpus_per_node:
        raise MassiveError(
            f"model {m.name!r}, rule {rule}: needs {need / 1e9:.0f} GB of GPU memory = {gpus} GPUs of "
            f"{site.gpu_mem_gb:g} GB, more than the {site.gpus_per_node} of a node "
            "(MA_SLURM_GPU_MEM_GB, MA_SLURM_GPUS_PER_NODE, or model.sizing.gpus)"
        )
    mem_mb = int(sizing.get("mem_mb") or max(16000, math.ceil(1.2 * loaded / 1e6 / 1000) * 1000 + 8000))
    tokens, tokens_f32 = work(rule, cfg, w)
    flops = 2 * active_params(w.config, w.params)
    rate = site.tflops * 1e12
    seconds = flops * (tokens - tokens_f32) / rate + flops * tokens_f32 / (rate / 4)
    if rule == "ablate_images":
        seconds += len(a.interventions) * a.max_images * IMAGE_SECONDS
    seconds += loaded / (site.read_gbps * 1e9) + 120  # reading the weights, starting up
    minutes = site.margin * seconds / 60 * float(sizing.get("runtime_factor") or 1.0)
    runtime = max(15, int(math.ceil(minutes / 5) * 5))
    return JobSize(rule, m.name, gpus, need / 1e9, mem_mb, runtime, tokens)


# ---------------------------------------------------------------- what the SLURM profile calls
_JOBS: dict[
    str, Callable[..., list[str]]
] = {}  # rule -> the Hydra overrides of one of its jobs (rules/common.smk ARGS)


def register(args: dict[str, Callable[..., list[str]]]) -> None:
    """The Snakefile hands over how each rule's job is composed (rules/common.smk ARGS)."""
    _JOBS.clear()
    _JOBS.update(args)


@functools.lru_cache(maxsize=None)
def _composed(argv: tuple[str, ...]):
    from pipeline.cli import compose

    return compose(list(argv))


@functools.lru_cache(maxsize=None)
def _weights(argv: tuple[str, ...], root: str) -> Weights:
    return weights(_composed(argv).model, root)


def job(rule: str, wildcards: dict[str, str], root: str = ".") -> JobSize:
    """The size of the job of `rule` with these wildcards, composed as its rule composes it. The
    jobs of one rule and model share one size (their corpus and blocks do not change it): the
    first one's config is composed, once."""
    if rule not in _JOBS:
        raise MassiveError(f"sizing: rule {rule!r} is not registered (rules/common.smk calls sizing.register)")
    key = (rule, wildcards.get("model", ""), str(root))
    if key not in _SIZES:
        argv = tuple(_JOBS[rule](**wildcards))
        model_argv = tuple(a for a in argv if a.startswith(("model=", "model.", "+model")))
        _SIZES[key] = size(rule, _composed(argv), _weights(model_argv or argv, str(root)), Site.from_env())
    return _SIZES[key]


_SIZES: dict[tuple[str, str, str], JobSize] = {}


def resource(rule: str, wildcards, key: str, gpu_type: str = ""):
    """One resource of one job for the SLURM profile: gres (gpu:<type>:<n>), mem_mb, runtime.
    A model that cannot be sized stops the dry run with one line naming it (exit 2)."""
    try:
        j = job(rule, dict(wildcards.items()), os.getcwd())
    except MassiveError as exc:
        _stop(str(exc))
    if key == "gres":
        return f"gpu:{gpu_type}:{j.gpus}" if gpu_type else f"gpu:{j.gpus}"
    return getattr(j, key)


PLACEHOLDER_ACCOUNT = "my_account"


def account(name: str) -> str:
    """The SLURM account of every job (profile: MA_SLURM_ACCOUNT); the profile's placeholder stops
    the run, -n included, with one line (exit 2)."""
    if name == PLACEHOLDER_ACCOUNT:
        _stop(
            f"SLURM account {name!r} is the profile's placeholder: set MA_SLURM_ACCOUNT=<your account> "
            "(sacctmgr show assoc user=$USER format=account), or MA_SLURM_ACCOUNT='' to submit without one "
            "(profiles/slurm/config.yaml)"
        )
    return name


def _stop(message: str) -> None:
    """One line and exit 2, now: Snakemake evaluates resources while it builds the DAG (before any
    job or lock) and would wrap an exception or SystemExit in a multi-line traceback of its own."""
    import sys

    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)
