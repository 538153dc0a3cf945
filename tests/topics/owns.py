"""What tests/rules/test_owns.py and tests/e2e/test_owns_e2e.py share: a working directory with a canary one
level up, and everything outside it."""

import pytest

from helpers import tree


@pytest.fixture
def work(tmp_path):
    """A working directory with a canary file one level up (tmp_path/canary.txt)."""
    (tmp_path / "canary.txt").write_text("canary")
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def outside(work):
    """Everything outside `work` (its parent's tree, work excluded)."""
    return {k: v for k, v in tree(work.parent).items() if not (k == "work" or k.startswith("work/"))}
