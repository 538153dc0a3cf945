import os
from pathlib import Path

# One OpenMP thread in each test process and in each process it starts (a rule through its CLI; a
# Snakemake job gets its rule's threads, profiles/default): two xdist workers share two cores, and torch
# ops on two threads each spun waiting for each other (tests/unit/test_families.py and test_detection.py:
# 37.0 s of CPU with torch's default, 31.1 s with one thread, the same wall time). Set before any torch import.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# the shared helpers, here too for the test modules that import them from conftest
from helpers import (
    TINY_SWEEP,
    run_module,  # noqa: F401
    snakemake,
    tiny_corpus,
    write_sweep,
)

os.environ.setdefault("WANDB_MODE", "disabled")
KINDS = ("unit", "rules", "e2e")  # tests/<kind>/: docs/testing.md


def pytest_collection_modifyitems(items):
    """Each test is marked with its folder's kind (`pytest -m unit`), and the slow ones (whole DAGs) run
    first: with `--dist worksteal` a worker that runs out takes only tests not yet started, so a long
    test that starts near the end leaves the other worker idle (the two-sweeps test, 82 s, started at
    512 s of a 601-s suite whose other worker had ended at 550 s)."""
    for item in items:
        if item.path.parent.name in KINDS:
            item.add_marker(item.path.parent.name)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest in file order


@pytest.fixture
def compose_in(tmp_path):
    """compose(overrides) rooted in a temporary folder with W&B disabled."""
    from pipeline.cli import compose

    def _compose(*overrides: str):
        return compose([f"paths.root={tmp_path}", "wandb.mode=disabled", *overrides])

    return _compose


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory, worker_id) -> Path:
    """The working directory of one whole-DAG run of TINY_SWEEP, report included: run once per test
    session and shared by the pytest-xdist workers (the first to take the lock runs it, the others
    wait and reuse it; its return code and output tails are kept beside it, so a failure shows in
    every test that uses it)."""
    import json

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    work, done = root / "tiny_dag", root / "tiny_dag.json"
    with FileLock(str(root / "tiny_dag.lock")):
        if not done.is_file():
            work.mkdir(exist_ok=True)
            tiny_corpus(work)
            proc = snakemake(
                "--cores", "2", "--config", f"sweep={write_sweep(work, **TINY_SWEEP)}", cwd=work, timeout=1500
            )
            done.write_text(
                json.dumps({"returncode": proc.returncode, "out": proc.stdout[-3000:] + proc.stderr[-3000:]})
            )
    result = json.loads(done.read_text())
    assert result["returncode"] == 0, result["out"]
    return work
