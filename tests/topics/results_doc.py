"""What tests/unit/test_results_doc.py and tests/e2e/test_results_doc_e2e.py share: the script that writes
docs/results.md."""

from __future__ import annotations

from helpers import REPO

SCRIPT = REPO / "scripts" / "results_doc.py"
