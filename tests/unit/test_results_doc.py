"""scripts/results_doc.py: docs/results.md, the README's numbers and the table schemas, written from a
run's results/ (the shared tiny DAG), with the machine and commit the tables record."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from topics.results_doc import SCRIPT


def load_script():
    spec = importlib.util.spec_from_file_location("results_doc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_block_quotes_the_run():
    """The README's table, from tables with massive activations found (the tiny DAG's random model finds none)."""
    rd = load_script()

    class Run:
        pairs = [("m", "wiki"), ("m", "news")]
        layers = ["emerge"]

    summary = pd.DataFrame({"dim": [507, 247], "mean_value": [-24523.3, 1868.0], "ratio_at_peak": [13499.0, 1057.0]})
    found = {"found": True, "dims": [247, 507], "roles": ["first"], "emerge_layer": 11, "n_layers": 30}
    det = {("m", c): {"result": found, "summary": summary} for c in ("wiki", "news")}
    abl = pd.DataFrame(
        {
            "model": "m",
            "corpus": ["wiki"] * 3,
            "layers": "emerge",
            "intervention": ["none", "zero", "mean"],
            "ratio": [1.0, 24963.6, 1.0035],
            "ratio_lo": [1.0, 17066.6, 0.99637],
            "ratio_hi": [1.0, 37463.5, 1.0119],
            "blocks": "11",
            "verdict": "harmful",
        }
    )
    prov = {"machine": ["AMD EPYC 7B13, 2 cores"], "git_commit": ["b3f8641abcdef"], "date": ["2026-12-06 06:20 UTC"]}
    block = rd.readme_block(Run(), {"detect": det, "attention": {}, "origins": {}, "inference": {}}, abl, prov)
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in block.splitlines() if line.startswith("| ")
    }
    assert rows["massive dims (token role)"][0] == "247, 507 (first)"
    assert rows["emerges after block"][0] == "11 of 0-29"
    assert rows["largest mean \\|a\\| (× median \\|a\\|)"][0] == "24,523.3 (×13,500)"
    assert rows["perplexity with them zeroed at block 11: × none [95%]"] == [
        "×25,000 [17,100, 37,500] †, harmful",
        "- |",
    ]
    assert rows["perplexity with them set to their mean at block 11: × none [95%]"][0] == "×1 [0.996, 1.01]"
    assert "Measured on AMD EPYC 7B13, 2 cores, commit b3f8641" in block
    assert (
        rd.replace_block("a\n<!-- results:begin -->\nx\n<!-- results:end -->\nb", "new")
        == "a\n<!-- results:begin -->\nnew\n<!-- results:end -->\nb"
    )
    with pytest.raises(SystemExit):
        rd.replace_block("no markers", "new")
