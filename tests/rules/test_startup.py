"""Start-up: the config, the sweeps and the Snakefile never import torch or transformers (issue 30:
~150 subprocesses of the suite, and every user's typo, paid ~2.4 s for torch before doing anything).
A rule's config error exits 2 with its one line before torch is imported: each rule module imports
its torch-needing modules inside run(). `python -X importtime` lists every module a process imports."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, SNAKEMAKE, write_sweep

CONFIG_MODULES = ["config", "cli", "jobs", "sweep", "checks", "sizing", "paths", "stages"]
HEAVY = ("torch", "transformers")


def imported(stderr: str) -> set[str]:
    """The top-level packages an `-X importtime` run imported."""
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+([\w.]+)$", stderr, re.M)}


def other_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if not ln.startswith("import time:")]


def test_the_config_modules_and_the_library_namespace_import_without_torch():
    code = (
        "import sys, massive, massive.core.configs, massive.core.dtypes, massive.measure.detect, "
        + ", ".join(f"pipeline.{m}" for m in CONFIG_MODULES)
        + "; assert set(massive.__all__) <= set(dir(massive)); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout[:500]


@pytest.mark.parametrize(
    "rule, arg, needle",
    [
        ("capture", "capture.top_kk=1", "capture.top_kk"),  # an unknown key
        ("ablate", "tokenize.num_sequences=0", "tokenize.num_sequences=0 must be positive"),  # out of range
        ("train", "train.name=../x", "train.name='../x' is not a safe name"),  # an unsafe name
    ],
)
def test_a_rule_config_error_exits_2_before_torch_is_imported(tmp_path, rule, arg, needle):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"pipeline.{rule}", arg],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    lines = other_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    assert needle in lines[0]
    assert not imported(proc.stderr) & set(HEAVY), sorted(imported(proc.stderr) & set(HEAVY))
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_dry_run_with_a_typo_imports_no_torch(tmp_path):
    """The Snakefile (rules/common.smk: pipeline.jobs, sweep, checks, config) composes every job's config."""
    sweep = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], overrides=["capture.top_kk=5"])
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *SNAKEMAKE[1:], "--directory", str(tmp_path), "-n"]
        + ["--config", f"sweep={sweep}"],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    errors = [ln for ln in other_lines(proc.stderr) if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "capture.top_kk" in errors[0], proc.stderr[-2000:]
    assert not imported(proc.stderr) & set(HEAVY), sorted(imported(proc.stderr) & set(HEAVY))
