"""Local fixtures laid out like the Hugging Face hub, for the code paths a cluster runs offline here.

`model_cache(dir)`: a huggingface_hub cache (HF_HUB_CACHE) holding the config.json of every hub model
of conf/model (tests/fixtures/hub/model_configs.json, as their repositories publish them), in the
cache's own layout: models--<org>--<name>/refs/main -> snapshots/<commit>/config.json. With
HF_HUB_OFFLINE=1, hf_hub_download reads them from there as it would after a download.
`dataset_cache(dir, hub_id, files, revision)`: the same for a dataset repository's files.
`model_repo(dir, hub_id, folder, revision)`: a model repository at a revision (a training checkpoint such
as Pythia's step1000) holding the files of a Hugging Face model folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures/hub"


def _snapshot(cache: Path, kind: str, hub_id: str, revision: str = "main") -> Path:
    repo = Path(cache) / f"{kind}--{hub_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{hub_id}@{revision}".encode()).hexdigest()
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def model_configs() -> dict[str, dict]:
    return json.loads((FIXTURES / "model_configs.json").read_text())


def model_cache(cache: Path, only: list[str] | None = None) -> Path:
    for hub_id, config in model_configs().items():
        if only is None or hub_id in only:
            (_snapshot(cache, "models", hub_id) / "config.json").write_text(json.dumps(config))
    return cache


def hub_env(cache: Path) -> dict[str, str]:
    """The environment that makes huggingface_hub (and datasets) read only `cache`."""
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1"}


def dataset_repo(cache: Path, hub_id: str, files: dict[str, object], revision: str = "main") -> Path:
    """A dataset repository at `revision` in the cache: `files` maps a path in the repository to its
    content: bytes or str as they are, a list of dicts as a table (jsonl, jsonl.gz or parquet by the
    path's ending)."""
    import gzip

    import pandas as pd

    snap = _snapshot(cache, "datasets", hub_id, revision)
    for name, content in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, str)):
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        elif name.endswith(".parquet"):
            pd.DataFrame(content).to_parquet(path, index=False)
        else:
            lines = "".join(json.dumps(row) + "\n" for row in content).encode()
            path.write_bytes(gzip.compress(lines) if name.endswith(".gz") else lines)
    return snap


def model_repo(cache: Path, hub_id: str, folder: Path, revision: str = "main") -> Path:
    """A model repository at `revision` in the cache, holding the files of the model folder `folder`
    (save_pretrained's: config.json, the weights, the tokenizer)."""
    import shutil

    snap = _snapshot(cache, "models", hub_id, revision)
    for f in Path(folder).iterdir():
        if f.is_file():
            shutil.copyfile(f, snap / f.name)
    return snap
