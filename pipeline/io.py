"""Where results live, how they are written (atomically, with provenance), and how they are read.

Every Parquet file carries in its schema metadata the composed config, the git commit, the
package versions and the seed, so a table says how it was made. The path functions below put
paths.root in front of pipeline/paths.py's relative paths, the ones the Snakefile uses, so the
DAG and the modules agree on every file name.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from massive.core.errors import MassiveError
from massive.core.files import atomic_path
from pipeline import paths

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["torch", "transformers", "hydra-core", "snakemake", "wandb", "pyarrow", "triton", "numpy", "pandas"]


# ---------------------------------------------------------------- paths (pipeline/paths.py, as the Snakefile)
def root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.root)


def results_dir(cfg: DictConfig) -> str:
    """The results folder of a composed config (paths.root / paths.results): the `results` of pipeline.paths."""
    return str(root(cfg) / cfg.paths.results)


def model_dir(cfg: DictConfig) -> Path:
    """The model in Hugging Face format (converted once from GGUF where needed)."""
    return root(cfg) / paths.model_dir(cfg.model.name, cfg.paths.cache)


def corpus_file(cfg: DictConfig) -> Path:
    return root(cfg) / paths.corpus_file(cfg.data.name, cfg.paths.cache)


def tokens_file(cfg: DictConfig) -> Path:
    return run_dir(cfg, "tokenize") / "tokens.parquet"


def run_dir(cfg: DictConfig, stage: str) -> Path:
    """A keyed stage's folder for this config: results/<model>/<corpus>/<stage>/<config id>
    (ablate, zeroshot, ablate_images: results/<model>/<corpus>/ablate/<layers>/<config id>)."""
    from pipeline.stages import out_dir

    return root(cfg) / out_dir(cfg, stage)


# ---------------------------------------------------------------- provenance
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout
        return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def machine() -> str:
    """The machine a table was computed on: CPU model and cores (and the GPU, where torch runs on one),
    e.g. 'AMD EPYC 7B13, 2 cores'. Floats from different CPUs may differ in their last digits."""
    import os
    import platform
    import sys

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    out = f"{cpu}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")  # only where the rule loaded it: no import for a GPU name
    try:
        if torch is not None and torch.cuda.is_available():
            out += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not fail a table write
        pass
    return out


def provenance(cfg: DictConfig) -> dict[str, str]:
    """The config, commit, packages, seed and machine; and `protocol` (bos | no_bos) once the run
    resolved it (pipeline.model.protocol: every rule that makes or reads token sequences)."""
    out = {
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "git_commit": git_commit(),
        "packages": json.dumps(package_versions(), sort_keys=True),
        "seed": str(cfg.seed),
        "machine": machine(),
    }
    if cfg.get("protocol") is not None:
        out["protocol"] = str(cfg.protocol.protocol)
    return out


def writer_of(path: str | Path) -> str:
    """The rule that writes a table, from its place (pipeline/paths.py): tokens.parquet -> tokenize,
    results/<model>/<corpus>/<stage>/... -> <stage>, cache/corpora/ -> fetch_corpus."""
    path = Path(path)
    if path.name == "tokens.parquet":
        return "tokenize"
    if path.parent.name == "corpora":
        return "fetch_corpus"
    if path.name.startswith("ablation_"):
        return "ablation"
    parts = path.parts
    for stage in ("capture", "detect", "attention", "origins", "retrofit", "inference", "ablate", "train"):
        if stage in parts[:-1]:
            return stage
    return "the rule that makes it"


def _unreadable(path: str | Path, exc: BaseException) -> MassiveError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return MassiveError(
        f"input {path} is not a readable Parquet file ({first[:160]}): it is written by rule "
        f"{writer_of(path)}; delete it and rerun that rule (snakemake remakes it)"
    )


def read_provenance(path: str | Path) -> dict[str, str]:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"pandas")}


# ---------------------------------------------------------------- atomic writes
def write_table(df: pd.DataFrame, path: str | Path, cfg: DictConfig, schema: pa.Schema | None = None) -> Path:
    """Write `df` as Parquet, atomically, with provenance in the schema metadata."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in provenance(cfg).items()})
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def read_token_ids(cfg: DictConfig, n: int | None = None):
    """The first `n` (None: all) sequences rule tokenize wrote for this model and corpus, as a
    LongTensor [n, seq_len], and their seq_ids."""
    import numpy as np
    import torch

    tokens = read_table(tokens_file(cfg)).iloc[:n]
    return torch.tensor(np.stack(tokens["input_ids"].to_numpy()), dtype=torch.long), tokens["seq_id"].tolist()


def read_table(path: str | Path) -> pd.DataFrame:
    """A rule's input table; a missing one is one line naming it (run the DAG, or the rule that makes it)."""
    if not Path(path).is_file():
        raise MassiveError(f"input {path} is missing: run the rule that makes it first (or the whole DAG: snakemake)")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:  # truncated, overwritten, not Parquet
        raise _unreadable(path, exc) from None


def read_detection(cfg: DictConfig):
    """The detect rule's outputs (results/<model>/<corpus>/detect/<id>/) read back as a massive.measure.detect.Detection."""
    from massive.measure.detect import Detection

    det = run_dir(cfg, "detect")
    if not (det / "summary.json").is_file():
        raise MassiveError(
            f"input {det / 'summary.json'} is missing: run the detect rule first (or the whole DAG: snakemake)"
        )
    return Detection.load(
        det, k=cfg.capture.top_k, thresholds={"min_abs": cfg.detect.min_abs, "min_ratio": cfg.detect.min_ratio}
    )
