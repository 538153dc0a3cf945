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
