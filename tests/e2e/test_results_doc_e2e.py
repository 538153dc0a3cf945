"""scripts/results_doc.py: docs/results.md, the README's numbers and the table schemas, written from a
run's results/ (the shared tiny DAG), with the machine and commit the tables record."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from topics.results_doc import SCRIPT


@pytest.mark.slow
def test_results_doc_from_the_tiny_dag(tiny_dag, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n\n<!-- results:begin -->\nold numbers\n<!-- results:end -->\n\ntail\n")
    out, schemas = tmp_path / "results.md", tmp_path / "schemas.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--workdir",
            str(tiny_dag),
            "--sweep",
            str(tiny_dag / "sweep.yaml"),
            "--results-md",
            str(out),
            "--readme",
            str(readme),
            "--schemas",
            str(schemas),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = out.read_text()
    # the machine, commit and seed are the tables' own (their provenance), not typed in
    det = next((tiny_dag / "results/tiny_random/news_sample/detect").glob("*/summary.parquet"))
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(det).metadata.items()}
    assert f"- machine: {meta['machine']}" in doc and meta["machine"].endswith(" cores")
    assert f"- commit: {meta['git_commit'][:12]}" in doc and "- seed: 1" in doc
    assert "† depends on the CPU or the seed" in doc
    # every section of the tiny sweep, with the numbers of its tables
    for head in (
        "## Massive activations",
        "## Ablation",
        "## Attention",
        "## Where they come from",
        "## At inference",
        "## Vision transformers",
        "## The report",
    ):
        assert head in doc, head
    abl = pd.read_parquet(tiny_dag / "results/ablation_sweep.parquet")
    zero = abl[(abl["intervention"] == "zero") & (abl["corpus"] == "news_sample")].iloc[0]
    from pipeline import columns

    assert (
        f"×{columns.sig3(zero['ratio'])} | [{columns.sig3(zero['ratio_lo'])}, {columns.sig3(zero['ratio_hi'])}]" in doc
    )
    assert "int8 activations, per tensor †" in doc  # activation quantization: CPU-dependent, marked
    att = json.loads(next((tiny_dag / "results/tiny_random/news_sample/attention").glob("*/summary.json")).read_text())
    assert f"| tiny_random | news_sample | {columns.cell('sink_1_share', att['sink_1_share'])} |" in doc
    # the README's block is replaced, the rest kept
    text = readme.read_text()
    assert text.startswith("intro\n\n<!-- results:begin -->\n") and text.endswith("<!-- results:end -->\n\ntail\n")
    assert "old numbers" not in text
    # the schemas: every table kind the run wrote, its columns from the file, headings from pipeline/columns.py
    s = schemas.read_text()
    assert "## `capture/layer_stats.parquet`" in s and "| `median_abs` | double | median \\|a\\| |" in s
    assert "## `ablation_<sweep>.parquet`" in s and "| `verdict` | " in s
    # a working directory without results/ is one line, exit 2
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--results-md", "", "--readme", "", "--schemas", ""],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip().startswith("error: no results/ in")
        and len(bad.stderr.strip().splitlines()) == 1
    )
