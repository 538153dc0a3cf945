"""The tables of a tiny whole-DAG run, stored once as a fixture (tests/fixtures/golden/) and
compared by tests/test_golden.py: a refactor must leave every table as it was.

    python tests/golden.py          # rewrite the fixture (only when a change of numbers is intended)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "golden"
SWEEP = {
    "models": ["tiny_random"], "corpora": ["news_sample"],
    "overrides": ["tokenize.num_sequences=4", "capture.top_k=8", "ablate.max_chunks=4"],
    "ablate": {"interventions": ["none", "zero", "mean", "random_zero"], "layers": ["emerge", "all"]},
    "attention": {"num_sequences": 4},
    "vision": {"models": ["vit_random"], "images": ["photos"], "overrides": ["ablate.max_images=6"]},
}
TARGETS = ["results/ablation_golden.parquet", "results/tiny_random/news_sample/attention/summary.json",
           "results/vit_random/photos/ablate/emerge/images.parquet",
           "results/tiny_random/news_sample/detect/summary.json", "results/vit_random/photos/detect/summary.json"]


def run_dag(workdir: Path) -> Path:
    """Run the golden sweep's DAG (no report, no training) in `workdir`; return its results folder."""
    sweep = workdir / "golden.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--workflow-profile", str(REPO / "profiles/default"),
           "--directory", str(workdir), "--cores", "2", *TARGETS, "--config", f"sweep={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "WANDB_MODE": "disabled"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return workdir / "results"


def tables(results: Path) -> dict[str, object]:
    """Every Parquet table (as a DataFrame) and JSON file (as a dict) under `results`, by relative path."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = str(path.relative_to(results))
        if any(part.startswith(".") for part in path.relative_to(results).parts):
            continue
        if path.suffix == ".parquet":
            out[rel] = pd.read_parquet(path)
        elif path.suffix == ".json":
            out[rel] = json.loads(path.read_text())
    return out


def write_fixture(results: Path) -> None:
    if FIXTURE.exists():
        shutil.rmtree(FIXTURE)
    for rel, value in tables(results).items():
        dest = FIXTURE / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, pd.DataFrame):
            value.to_parquet(dest, index=False)  # no provenance metadata: it changes with every commit
        else:
            dest.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(run_dag(Path(tmp)))
    print(f"wrote {sum(1 for p in FIXTURE.rglob('*') if p.is_file())} files to {FIXTURE}")
