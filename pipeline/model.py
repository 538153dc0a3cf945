"""The config -> library adapter for loading: the model fetch_model recorded, loaded with the
options of the composed config (model.dtype, model.auto_class, model.config_overrides, ...).

    >>> from pipeline.model import load_model, load_tokenizer, protocol
    >>> model, tok = load_model(cfg, device), load_tokenizer(cfg)
    >>> protocol(cfg, tok).name      # model.bos resolved with the tokenizer: "bos" or "no_bos"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from massive.core.errors import MassiveError
from massive.core.sequences import BosFacts, Protocol, resolve
from pipeline import paths
from pipeline.names import plain

if TYPE_CHECKING:  # the annotations only: the loading functions import torch when they run
    import torch
from pipeline.paths import MARKER  # written by fetch_model: where the Hugging Face directory is


def pick_device(name):
    """massive.core.models.pick_device: "auto" is cuda when available, else cpu."""
    from massive.core import models

    return models.pick_device(name)


# ---------------------------------------------------------------- what fetch_model recorded, and its check
# fetched.json names the Hugging Face directory relative to the working directory (paths.root; a
# source=local directory outside it stays absolute) and records the size and sha256 of every file in
# it (and of head.pt). Every rule checks them before it reads the model: sizes always, and the
# sha256 of a file whose stat (size, mtime, inode) differs from the one last verified (VERIFIED,
# beside fetched.json), so a changed, truncated, moved-in or copied file is found, and an untouched
# cache costs a stat per file. A working directory moved or copied whole uses its own files.
VERIFIED = ".verified.json"
_CHUNK = 1 << 24


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def recorded_path(path: Path, root: Path) -> str:
    """`path` as fetched.json names it: relative to the working directory when inside it, else absolute."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def record_files(files: list[Path], root: Path) -> dict:
    """{recorded path: {size, sha256}} of `files` (fetch_model, once; the weights of a 100 GB model take
    minutes to hash, against the hours of their download)."""
    return {recorded_path(f, root): {"size": f.stat().st_size, "sha256": sha256(f)} for f in files}


def model_files(hf: Path) -> list[Path]:
    """Every file of a Hugging Face directory (not hidden ones such as the hub's .cache/)."""
    return sorted(
        p
        for p in Path(hf).rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(hf).parts)
    )


def _resolve(recorded: str, root: Path) -> Path:
    p = Path(recorded)
    return p if p.is_absolute() else root / p


def verified_stamps(files: dict, root: Path) -> dict:
    """The VERIFIED record of files just hashed: {recorded path: [size, mtime_ns, inode, device, sha256]}."""
    return {rec: [*_stat(_resolve(rec, root)), want["sha256"]] for rec, want in files.items()}


_verified: set[tuple] = set()  # (marker, its stat): checked in this process


def verify(record: dict, root: Path, marker_path: Path) -> None:
    """Every file fetched.json records is there, of its size and sha256 (see VERIFIED); else a MassiveError
    naming the file and the fix (fetch the model again)."""
    key = (str(marker_path.resolve()), *_stat(marker_path))
    if key in _verified:
        return
    again = f"delete {marker_path.parent} and fetch the model again (snakemake, or python -m pipeline.fetch_model)"
    files = record.get("files")
    if files is None or Path(record.get("hf_dir", "")).is_absolute() and record.get("source") != "local":
        raise MassiveError(
            f"{marker_path} was written by an older version (an absolute path, no content hashes: "
            f"the cache may be another directory's): {again}"
        )
    stamp_path = marker_path.parent / VERIFIED
    try:
        stamps = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    changed = False
    for recorded, want in files.items():
        path = _resolve(recorded, root)
        if not path.is_file():
            raise MassiveError(f"{path} is missing (fetch_model recorded it in {marker_path}): {again}")
        stat = _stat(path)
        if stat[0] != want["size"]:
            raise MassiveError(
                f"{path} has {stat[0]} bytes, fetch_model recorded {want['size']}: it changed since the fetch; {again}"
            )
        if stamps.get(recorded) != [*stat, want["sha256"]]:
            if sha256(path) != want["sha256"]:
                raise MassiveError(f"{path} changed since fetch_model recorded it (its sha256 differs): {again}")
            stamps[recorded], changed = [*stat, want["sha256"]], True
    if changed:
        from massive.core.files import atomic_path

        with (
            contextlib.suppress(OSError, MassiveError),
            atomic_path(stamp_path) as tmp,
        ):  # read-only or full: again next time
            tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True))
    _verified.add(key)


def marker(cfg: DictConfig) -> dict:
    """What fetch_model recorded for this model (hf_dir, source, name, head, files), after checking the
    recorded files (verify)."""
    from pipeline.io import model_dir, root

    path = model_dir(cfg) / MARKER
    if not path.exists():
        raise MassiveError(f"model {cfg.model.name!r} is not fetched: {path} missing (run the fetch_model rule)")
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise MassiveError(f"{path} is not valid JSON: delete {path.parent} and fetch the model again") from None
    verify(record, root(cfg), path)
    fetched, wanted = record.get("revision"), cfg.model.get("revision")
    if fetched != wanted:  # the weights of another checkpoint: every number would be that one's
        hint = (
            f": name the run after its revision (model.name={paths.base_model(cfg.model.name)}@{wanted}) so it has a "
            f"fetch of its own, or list it in a sweep's revisions"
            if wanted
            else ""
        )
        raise MassiveError(
            f"model {cfg.model.name!r} was fetched at revision {fetched or 'main'} ({path}), this run asks "
            f"for {wanted or 'main'}{hint}"
        )
    out = dict(record, hf_dir=str(_resolve(record["hf_dir"], root(cfg))))
    if record.get("head"):
        out["head"] = str(_resolve(record["head"], root(cfg)))
    return out


def hf_dir(cfg: DictConfig) -> Path:
    """The Hugging Face directory fetch_model recorded for this model (checked: verify)."""
    return Path(marker(cfg)["hf_dir"])


def load_tokenizer(cfg: DictConfig):
    """The fetched model's tokenizer."""
    from massive.core import models

    return models.load_tokenizer(hf_dir(cfg), cfg.model.trust_remote_code, name=cfg.model.name)


# ---------------------------------------------------------------- what the checks and the protocol read
# fetch_model records under "facts" in fetched.json what the checks of a rule's values (pipeline.checks)
# and the sequence protocol (model.bos) read from the model's config.json and tokenizer, with the
# options they were read under (model.config_overrides, model.trust_remote_code). A later rule, or
# `snakemake -n`, with the same options takes them from there instead of loading transformers' config
# and tokenizer classes (3-4 s of each job's start); other options read the files again. The files
# themselves are checked against fetched.json's hashes (verify) before anything is read.
def _options(cfg: DictConfig) -> dict:
    return {
        "config_overrides": OmegaConf.to_container(cfg.model.config_overrides),
        "trust_remote_code": bool(cfg.model.trust_remote_code),
    }


def _or_none(read: Callable[[], object]):
    try:
        return read()
    except (MassiveError, AttributeError, TypeError, ValueError):
        return None


def read_facts(cfg: DictConfig, hf: Path, tokenizer: bool = False) -> dict:
    """The facts of the model in `hf` under cfg's options: its blocks, width, positions, patch size and
    registers (None where the config does not tell), and with `tokenizer` its tokenizer's BosFacts
    (None when it has no tokenizer files; left out when it fails to load: the rule loading it says why)."""
    from transformers import AutoConfig

    from massive.core import configs  # the config facts, without torch

    options = _options(cfg)
    try:
        config = AutoConfig.from_pretrained(
            hf, trust_remote_code=options["trust_remote_code"], **options["config_overrides"]
        )
    except (OSError, ValueError) as exc:
        raise MassiveError(
            f"cannot read the config of {cfg.model.name!r} in {hf}: {str(exc).splitlines()[0]}"
        ) from None
    out = {
        "options": options,
        "model_type": getattr(config, "model_type", None),
        "num_layers": _or_none(lambda: configs.num_layers(config)),
        "hidden_size": _or_none(lambda: configs.hidden_size(config)),
        "max_positions": configs.max_positions(config),
        "patch_size": _or_none(lambda: configs.patch_size(config)),
        "num_register_tokens": int(getattr(configs.vision_config(config), "num_register_tokens", 0) or 0),
    }
    if tokenizer:
        from massive.core import models

        if not any((Path(hf) / f).exists() for f in models.TOKENIZER_FILES):
            out["tokenizer"] = None
        else:
            try:
                out["tokenizer"] = asdict(BosFacts.of(models.load_tokenizer(hf, options["trust_remote_code"])))
            except MassiveError:
                pass
    return out


def recorded_facts(cfg: DictConfig) -> dict | None:
    """The facts fetch_model recorded, when this run's options are those they were read under (else None)."""
    facts = marker(cfg).get("facts")
    return facts if facts and facts.get("options") == _options(cfg) else None


def facts(cfg: DictConfig) -> dict:
    """The fetched model's facts under this run's options (read_facts): as recorded, or read now."""
    return recorded_facts(cfg) or read_facts(cfg, hf_dir(cfg))


def need(facts: dict, key: str, name: str):
    """facts[key], or the MassiveError saying the model's config does not tell it."""
    if facts.get(key) is None:
        what = key.replace("num_", "number of ").replace("_", " ")
        raise MassiveError(f"cannot tell the {what} of {name!r} (model_type={facts.get('model_type')!r})")
    return facts[key]


def protocol(cfg: DictConfig, tok=None) -> Protocol:
    """How every sequence of this run begins: model.bos resolved with the model's tokenizer
    (massive.core.sequences.resolve; `tok` saves loading it, and so do the BosFacts fetch_model
    recorded). Resolved once per run and kept in cfg.protocol, so every table the run writes records
    it (pipeline.io.provenance). model.bos=always for a tokenizer without a BOS token is a one-line error."""
    if cfg.get("protocol") is not None:
        return Protocol(
            **{k: v for k, v in OmegaConf.to_container(cfg.protocol).items() if k in Protocol.__dataclass_fields__}
        )
    if tok is None:
        recorded = recorded_facts(cfg)
        if recorded and recorded.get("tokenizer") is not None:
            tok = BosFacts(**recorded["tokenizer"])
    p = resolve(load_tokenizer(cfg) if tok is None else tok, plain(cfg.model.bos), name=repr(cfg.model.name))
    with open_dict(cfg):
        cfg.protocol = p.record()
    return p


def load_model(cfg: DictConfig, device: torch.device | None = None, attn_implementation: str | None = None):
    """The fetched model in eval mode, in model.dtype, on `device` (or sharded by model.device_map)."""
    import torch

    from massive.core import models

    m = cfg.model
    head = None
    if m.head:
        head = marker(cfg).get("head")
        if head is None:
            raise MassiveError(f"model.head is set but it was not fetched (model {m.name!r}; run the fetch_model rule)")
    model = models.load_model(
        hf_dir(cfg),
        dtype=plain(m.dtype),
        device=None,
        auto_class=m.auto_class,
        attn_implementation=attn_implementation,
        trust_remote_code=m.trust_remote_code,
        config_overrides=OmegaConf.to_container(m.config_overrides),
        device_map=m.device_map,
        name=m.name,
    )
    if head is not None:
        models.load_head(model, head, label=m.head)
    if device is not None and not (m.device_map and torch.cuda.is_available()):
        model.to(device)
    return model


def intervene(cfg: DictConfig, model, found, name: str, tok=None, **extra):
    """massive.intervene.interventions.intervene under the run's settings: its seed, and detect's
    thresholds and delimiters (the rule's definition of "massive"); `extra`: roles_of, layers, ...

        >>> with intervene(cfg, model, found, "zero", tok):  # doctest: +SKIP
        ...     nll = massive.chunk_nll(model, chunks)
    """
    from massive.intervene import interventions

    d = cfg.detect
    return interventions.intervene(
        model,
        found,
        name,
        tokenizer=tok,
        seed=cfg.seed,
        min_abs=d.min_abs,
        min_ratio=d.min_ratio,
        delimiters=list(d.delimiters),
        **extra,
    )
