import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def compose_in(tmp_path):
    """compose(overrides) rooted in a temporary folder with W&B disabled."""
    from pipeline.cli import compose

    def _compose(*overrides: str):
        return compose([f"paths.root={tmp_path}", "wandb.mode=disabled", *overrides])

    return _compose


def run_module(module: str, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.<module> args...` as a user would."""
    return subprocess.run([sys.executable, "-m", f"pipeline.{module}", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, env={**os.environ, "WANDB_MODE": "disabled", **(env or {})}, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2 and exactly one `error:` line on stderr, naming what it should."""
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def detected_run(cfg, n_seq: int, seq_len: int) -> None:
    """Fetch the config's (local) model, write n_seq random token sequences and a small corpus
    whose perplexity chunks each start with token 0 (the byte tokenizer reads "<s>" as id 0), then
    run the capture and detect rules: the inputs of the rules that read a detection."""
    import pandas as pd

    import tiny
    from pipeline import capture, detect, fetch_model
    from pipeline.io import corpus_file, tokens_file, write_table

    fetch_model.run(cfg)
    write_table(pd.DataFrame({"seq_id": range(n_seq), "input_ids": tiny.sequences(n_seq, seq_len).tolist()}), tokens_file(cfg), cfg)
    docs = ["<s>" + "".join(chr(97 + (i * 7 + j * 3) % 26) for j in range(seq_len - 3)) for i in range(6)]
    write_table(pd.DataFrame({"text": docs}), corpus_file(cfg), cfg)
    capture.run(cfg)
    detect.run(cfg)


# The tiny sweep of the whole-DAG tests (tests/test_dag.py, tests/test_browser.py, tests/test_golden.py):
# every LLM rule (ablation, attention, origins, inference) on two corpora, and the ViT smoke run. It holds
# the golden sweep (tests/golden.py SWEEP: its tables are the golden test's), hence the ablation at "all".
TINY_SWEEP = dict(models=["tiny_random"], corpora=["news_sample", "wiki_sample"],
                  overrides=["tokenize.num_sequences=4", "capture.top_k=8", "ablate.max_chunks=4"],
                  ablate={"interventions": ["none", "zero", "mean", "random_zero"], "layers": ["emerge", "all"]},
                  attention={"num_sequences": 4}, origins={"num_sequences": 2, "max_chunks": 2},
                  inference={"max_chunks": 1, "windows": [8], "sinks": [1], "schemes": ["a8_per_tensor", "w4_per_channel"]},
                  vision={"models": ["vit_random"], "images": ["photos"], "overrides": ["ablate.max_images=6"]})


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory, worker_id) -> Path:
    """The working directory of one whole-DAG run of TINY_SWEEP, report included: run once per test
    session and shared by the pytest-xdist workers (the first to take the lock runs it, the others
    wait and reuse it; its return code and output tails are kept beside it, so a failure shows in
    every test that uses it)."""
    import json

    from filelock import FileLock

    from test_dag import snakemake, write_sweep

    root = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    work, done = root / "tiny_dag", root / "tiny_dag.json"
    with FileLock(str(root / "tiny_dag.lock")):
        if not done.is_file():
            work.mkdir(exist_ok=True)
            proc = snakemake("--cores", "2", "--config", f"sweep={write_sweep(work, **TINY_SWEEP)}", cwd=work, timeout=1500)
            done.write_text(json.dumps({"returncode": proc.returncode, "out": proc.stdout[-3000:] + proc.stderr[-3000:]}))
    result = json.loads(done.read_text())
    assert result["returncode"] == 0, result["out"]
    return work
