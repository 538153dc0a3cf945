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
