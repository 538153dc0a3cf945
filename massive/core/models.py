"""Loading a model and its tokenizer (or image processor): from the hub, a local Hugging Face
directory, or a GGUF file.

    >>> import massive
    >>> model, tok = massive.load("HuggingFaceTB/SmolLM2-135M")          # a hub id
    >>> model, tok = massive.load("cache/models/smollm2_135m/hf")         # a local directory
    >>> model, tok = massive.load("SmolLM2-135M-Instruct.Q4_1.gguf")      # dequantised once, cached

A GGUF file is dequantised into a float32 Hugging Face directory on first use (`convert_gguf`),
so later loads read safetensors in about a second instead of ~20 s of dequantisation. The
pieces of `load` are public too: `random_model` (a seeded random-init model from a config, for
smoke tests), `byte_tokenizer`, `check_weights` (every weights file of a directory is whole),
`load_model`, `load_tokenizer`, `load_head`, `model_class`, `pick_device`, `download_hub` and
`fetch_head`. Every error in the caller's input is a MassiveError, one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from massive.core.arch import DTYPES
from massive.core.errors import MassiveError
from massive.core.files import atomic_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ---------------------------------------------------------------- small pieces
def pick_device(name: str | torch.device | None) -> torch.device:
    """A torch device; "auto" is cuda when available, else cpu.

    >>> pick_device("auto")
    device(type='cpu')
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_class(name: str | None = None):
    """The transformers class that loads a model (AutoModelForCausalLM when `name` is None).

    >>> model_class("AutoModel").__name__
    'AutoModel'
    """
    import transformers

    name = name or "AutoModelForCausalLM"
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise MassiveError(f"model.auto_class={name!r} is not a transformers model class")
    return cls


def byte_tokenizer(add_bos: bool = False):
    """A small byte-level BPE tokenizer trained on nothing: 256 byte tokens plus BOS (0) / EOS (1).
    With `add_bos`, it adds the BOS by default (`tok(text)`), as LLaMA's tokenizer does.

        >>> tok = byte_tokenizer()
        >>> tok("hi")["input_ids"], byte_tokenizer(add_bos=True)("hi")["input_ids"]
        ([73, 74], [0, 73, 74])
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def save(out: Path, *objects) -> Path:
    """`save_pretrained` every object (a model, a tokenizer, a processor) into the directory `out`,
    atomically: `out` is replaced only when all of them are written.

        >>> save(Path("hf"), *random_model(arch, seed=1))
    """
    out = Path(out)
    with atomic_dir(out) as tmp:
        for obj in objects:
            obj.save_pretrained(tmp)
    return out


# ---------------------------------------------------------------- making a model directory
def random_model(
    arch: dict[str, Any], seed: int, auto_class: str | None = None, image_processor: dict[str, Any] | None = None
):
    """A random-init model of the Hugging Face config `arch` (with its model_type), seeded, and
    its preprocessor: a byte tokenizer, or `transformers.<image_processor_type>(**kwargs)` of
    `image_processor` for a vision model.

        >>> model, tok = random_model({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        ...                            "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 258}, seed=1)
    """
    import transformers
    from transformers import AutoConfig

    arch = dict(arch)
    model_type = arch.pop("model_type", None)
    if model_type is None:
        raise MassiveError("model.arch needs a model_type for source=random")
    config = AutoConfig.for_model(model_type, **arch)
    torch.manual_seed(seed)
    cls = model_class(auto_class)
    make = cls.from_config if hasattr(cls, "from_config") else cls._from_config
    model = make(config, dtype=torch.float32)
    if image_processor is not None:
        kwargs = dict(image_processor)
        kind = kwargs.pop("image_processor_type", None)
        if getattr(transformers, str(kind), None) is None:
            raise MassiveError(
                f"model.image_processor.image_processor_type={kind!r} is not a transformers image processor"
            )
        return model, getattr(transformers, kind)(**kwargs)
    return model, byte_tokenizer()


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF file into a float32 Hugging Face directory `out` (model + tokenizer).

    >>> convert_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), Path("cache/smollm2"))
    PosixPath('cache/smollm2')
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise MassiveError(f"GGUF file not found: {gguf}")
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # the gguf reader raises many kinds on a corrupt file
        raise MassiveError(f"cannot read GGUF file {gguf}: {_first_line(exc)}") from None
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised: save them as plain floats
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    return save(Path(out), model, tok)


HUB_FILES = ["*.json", "*.model", "*.txt", "*.py", "*.tiktoken"]  # config, tokenizer, code: with the weights


def _weights_pattern(files: list[str]) -> str:
    return "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"  # never both


def download_hub(hub_id: str, out: Path, revision: str | None = None) -> Path:
    """The files of hub repository `hub_id` at `revision` (a branch, tag or commit: a training
    checkpoint such as Pythia's step1000; None: main) that a model needs (config, tokenizer, code,
    weights: the safetensors where the repository has them, else the .bin files), downloaded into
    `out`. Offline (HF_HUB_OFFLINE=1: a compute node), they are copied from the HF cache, where a
    download on a login node (huggingface-cli download, snapshot_download) left them.

        >>> download_hub("EleutherAI/pythia-160m", Path("cache/pythia"), revision="step1000")
    """
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import OfflineModeIsEnabled

    where = f"{hub_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        try:
            files = list_repo_files(hub_id, revision=revision)
        except OfflineModeIsEnabled:
            return _copy_cached(hub_id, Path(out), revision)
        snapshot_download(
            hub_id, revision=revision, local_dir=out, allow_patterns=[*HUB_FILES, _weights_pattern(files)]
        )
    except Exception as exc:  # offline and not cached, gated, not found, no such revision
        raise MassiveError(f"cannot download {where} from the Hugging Face hub: {_first_line(exc)}") from None
    return Path(out)


def _copy_cached(hub_id: str, out: Path, revision: str | None) -> Path:
    """The files download_hub would fetch, from the HF cache's snapshot of `hub_id` at `revision`
    (hard links where the cache is on the same file system)."""
    from fnmatch import fnmatch

    from huggingface_hub import snapshot_download

    snap = Path(snapshot_download(hub_id, revision=revision, local_files_only=True))
    files = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    patterns = [*HUB_FILES, _weights_pattern(files)]
    for name in (f for f in files if any(fnmatch(f, p) for p in patterns)):
        src, dst = (snap / name).resolve(), out / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return out


def fetch_head(source: str, out: Path) -> Path:
    """The linear head file `source` (a URL, or a local path), copied to `out` once.

    >>> fetch_head("https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_linear_head.pth", Path("head.pt"))
    """
    out = Path(out)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        if source.startswith(("http://", "https://")):
            try:
                torch.hub.download_url_to_file(source, str(tmp), progress=False)
            except Exception as exc:  # offline, 404
                raise MassiveError(f"cannot download model.head={source!r}: {_first_line(exc)}") from None
        elif Path(source).is_file():
            shutil.copyfile(source, tmp)
        else:
            raise MassiveError(f"model.head={source!r} is neither a URL nor a file")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- checking a model directory
def _safetensors_header(path: Path) -> dict:
    """The tensor table of a safetensors file, after checking that the file is as long as it says."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or 8 + n > size:
            raise MassiveError(
                f"weights file {path} is truncated or not a safetensors file ({size} bytes, "
                f"{'no header' if n < 0 else f'its header alone needs {8 + n}'})"
            )
        try:
            header = json.loads(fh.read(n))
            ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise MassiveError(
                f"weights file {path} is not a safetensors file (its header is not a tensor table)"
            ) from None
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        raise MassiveError(
            f"weights file {path} is {'truncated' if size < expected else 'too long'}: "
            f"{size} bytes, its header says {expected}"
        )
    return header


def _check_torch_file(path: Path) -> None:
    """A .bin weights file opens: the zip format's directory (at its end) is there, or a legacy pickle loads."""
    with open(path, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(path):
        raise MassiveError(f"weights file {path} is truncated: a zip file without its central directory at the end")
    try:
        if zipped:
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        else:
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a broken pickle
        raise MassiveError(f"weights file {path} does not open (truncated?): {_first_line(exc)}") from None


def check_weights(hf_dir: Path) -> list[Path]:
    """The weights files of a Hugging Face directory, after checking each one is whole: a
    safetensors file is as long as its header says and holds the tensors its index names; a .bin
    file opens. Reads headers only, not the weights.

        >>> check_weights(Path("cache/models/smollm2_135m/hf"))
        [PosixPath('cache/models/smollm2_135m/hf/model.safetensors')]
    """
    hf_dir = Path(hf_dir)
    safetensors = sorted(hf_dir.glob("*.safetensors"))
    bins = sorted(p for p in hf_dir.glob("*.bin") if p.name.startswith("pytorch_model"))
    if not safetensors and not bins:
        raise MassiveError(f"no weights file (*.safetensors or pytorch_model*.bin) in {hf_dir}")
    headers = {p.name: _safetensors_header(p) for p in safetensors}
    for p in bins:
        _check_torch_file(p)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = hf_dir / index_name
        if not index.is_file():
            continue
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise MassiveError(f"weights index {index} is not a weights index (no weight_map)") from None
        for tensor, file in weight_map.items():
            if not (hf_dir / file).is_file():
                raise MassiveError(f"weights file {hf_dir / file} is missing (named in {index})")
            if file in headers and tensor not in headers[file]:
                raise MassiveError(f"weights file {hf_dir / file} lacks tensor {tensor!r} (named in {index})")
    return safetensors + bins


# ---------------------------------------------------------------- loading
def load_tokenizer(path: str | Path, trust_remote_code: bool = False, name: str | None = None):
    """The tokenizer saved in `path` (a directory or a hub id).

    >>> load_tokenizer("cache/models/smollm2_135m/hf")("Summer is warm.")["input_ids"]
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise MassiveError(
            f"cannot load the tokenizer of {name or str(path)!r} from {path}: {_first_line(exc)}"
        ) from None


def load_preprocessor(path: str | Path, trust_remote_code: bool = False):
    """The tokenizer of `path`, or its image processor (PIL backend) when it has no tokenizer.

    >>> type(load_preprocessor("facebook/dinov2-small")).__name__
    'BitImageProcessor'
    """
    from transformers import AutoImageProcessor

    local = Path(path).is_dir()
    if not local or any((Path(path) / f).exists() for f in TOKENIZER_FILES):
        try:
            return load_tokenizer(path, trust_remote_code)
        except MassiveError:
            if local:
                raise
    try:  # the same backend on every machine: torchvision's resizing differs slightly
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, backend="pil")
    except (OSError, ValueError) as exc:
        raise MassiveError(f"no tokenizer or image processor in {path}: {_first_line(exc)}") from None


def load_head(model: torch.nn.Module, path: str | Path, label: str | None = None) -> torch.nn.Module:
    """Load the linear head saved at `path` (a state dict of weight and bias) into `model.classifier`.

    >>> load_head(model, "head.pt")
    """
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        raise MassiveError(
            f"{type(model).__name__} has no classifier for the head {label or str(path)!r}"
            " (a head needs auto_class=AutoModelForImageClassification)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        classifier.load_state_dict(state)
    except RuntimeError:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise MassiveError(
            f"model.head={label or str(path)!r} ({shapes}) does not fit the classifier {classifier}"
        ) from None
    return model


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    auto_class: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    config_overrides: dict[str, Any] | None = None,
    head: str | Path | None = None,
    device_map: str | None = None,
    name: str | None = None,
) -> torch.nn.Module:
    """The model saved in `path` (a directory or a hub id) in eval mode, in `dtype`, on `device`
    (left where it loads when None; sharded by `device_map` where CUDA is available).

        >>> model = load_model("cache/models/smollm2_135m/hf", dtype="bfloat16", device="auto")
    """
    kwargs = dict(
        dtype=DTYPES[dtype] if isinstance(dtype, str) else dtype,
        trust_remote_code=trust_remote_code,
        **dict(config_overrides or {}),
    )
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    use_map = bool(device_map) and torch.cuda.is_available()
    if use_map:
        kwargs["device_map"] = device_map
    try:
        model = model_class(auto_class).from_pretrained(path, **kwargs)
    except MassiveError:
        raise
    except Exception as exc:  # a missing or corrupt weights file: transformers raises many kinds
        raise MassiveError(
            f"cannot load the weights of {name or str(path)!r} from {path}: {_first_line(exc)}"
        ) from None
    if head is not None:
        load_head(model, head)
    if not use_map and device is not None:
        model.to(pick_device(device))
    return model.eval()


def gguf_cache(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """Where `load` keeps the dequantised directory of a GGUF file: one per file path, size and mtime,
    under `cache_dir` (default $MASSIVE_CACHE or ~/.cache/massive).

        >>> gguf_cache(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), "/tmp/cache")
        PosixPath('/tmp/cache/gguf/SmolLM2-135M-Instruct.Q4_1-3f2a9c1d0b7e')
    """
    gguf = Path(gguf).resolve()
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    base = Path(cache_dir or os.environ.get("MASSIVE_CACHE") or Path.home() / ".cache" / "massive")
    return base / "gguf" / f"{gguf.stem}-{key}"


def load(
    source: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    auto_class: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    config_overrides: dict[str, Any] | None = None,
    head: str | Path | None = None,
    cache_dir: str | Path | None = None,
):
    """(model, tokenizer or image processor) of `source`: a hub id, a local Hugging Face directory,
    or a .gguf file (dequantised to float32 into a cache directory on first use, see `gguf_cache`).

        >>> import massive
        >>> model, tok = massive.load("HuggingFaceTB/SmolLM2-135M")
        >>> model, processor = massive.load("facebook/dinov2-small", auto_class="AutoModel", device="auto")
    """
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise MassiveError(f"GGUF file not found: {path}")
        path = gguf_cache(path, cache_dir)
        if not (path / "config.json").is_file():
            convert_gguf(Path(source), path)
    elif path.exists():
        if not (path / "config.json").is_file():
            raise MassiveError(f"{source} is not a Hugging Face model directory (no config.json)")
        check_weights(path)
    else:
        path = str(source)  # a hub id: transformers downloads it into its own cache
    model = load_model(path, dtype, device, auto_class, attn_implementation, trust_remote_code, config_overrides, head)
    return model, load_preprocessor(path, trust_remote_code)
