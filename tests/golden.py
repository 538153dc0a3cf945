"""The tables of a tiny whole-DAG run, stored once as a fixture (tests/fixtures/golden/) and
compared by tests/e2e/test_golden.py: a refactor must leave every table as it was.

    python tests/golden.py          # rewrite the fixture (only when a change of numbers is intended)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from helpers import REPO, SNAKEMAKE

FIXTURE = REPO / "tests" / "fixtures" / "golden"
SWEEP = {
    "models": ["tiny_random"],
    "corpora": ["news_sample"],
    "overrides": ["tokenize.num_sequences=4", "capture.top_k=8", "ablate.max_chunks=4"],
    "ablate": {"interventions": ["none", "zero", "mean", "random_zero"], "layers": ["emerge", "all"]},
    "attention": {"num_sequences": 4},
    "vision": {"models": ["vit_random"], "images": ["photos"], "overrides": ["ablate.max_images=6"]},
}
# (rule, model, corpus[, layers]) and the file of each target; their folders carry the config id
TARGETS = [
    (("attention", "tiny_random", "news_sample"), "summary.json"),
    (("ablate_images", "vit_random", "photos", "emerge"), "images.parquet"),
    (("detect", "tiny_random", "news_sample"), "summary.json"),
    (("detect", "vit_random", "photos"), "summary.json"),
]
ID = re.compile(r"^[0-9a-f]{8}$")  # a config id folder (pipeline/stages.py): left out of the fixture's paths


def targets(sweep: Path) -> list[str]:
    """The golden run's target files: the ablation table and TARGETS in their keyed folders."""
    sys.path.insert(0, str(REPO))
    from pipeline import jobs
    from pipeline import sweep as sweeps

    plan = jobs.Plan(sweeps.load(str(sweep)), str(sweep))
    return ["results/ablation_golden.parquet"] + [f"{plan.dir(*job)}/{name}" for job, name in TARGETS]


def run_dag(workdir: Path) -> Path:
    """Run the golden sweep's DAG (no report, no training) in `workdir`; return its results folder."""
    sweep = workdir / "golden.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    files = targets(sweep)
    cmd = [
        *SNAKEMAKE,
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *files,
        "--config",
        f"sweep={sweep}",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "WANDB_MODE": "disabled"}
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return workdir / "results"


def tables(results: Path) -> dict[str, object]:
    """Every Parquet table (as a DataFrame) and JSON file (as a dict) under `results`, by relative path
    without its config id folder (one per stage in the golden sweep)."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = "/".join(part for part in path.relative_to(results).parts if not ID.match(part))
        if any(part.startswith(".") for part in path.relative_to(results).parts):
            continue
        if path.suffix == ".parquet":
            out[rel] = pd.read_parquet(path)
        elif path.suffix == ".json":
            out[rel] = json.loads(path.read_text())
    return out


def lay_out(results: Path, sweep: Path) -> None:
    """Move the fixture's tables (copied to `results`, without config ids) into the keyed folders of
    `sweep`'s jobs, as a run of it lays them out (the inverse of `tables`)."""
    sys.path.insert(0, str(REPO))
    from pipeline import jobs, stages
    from pipeline import sweep as sweeps

    plan = jobs.Plan(sweeps.load(str(sweep)), str(sweep))
    for (rule, model, corpus, *layers), cid in plan.ids(root=results.parent).items():
        plain = results / model / corpus / stages.STAGES[rule].dir_name / "/".join(layers)
        keyed = results.parent / plan.dir(rule, model, corpus, *layers)
        for f in [f for f in plain.glob("*") if f.is_file()] if plain.is_dir() else []:
            keyed.mkdir(parents=True, exist_ok=True)
            f.rename(keyed / f.name)


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
