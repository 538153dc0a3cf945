"""Figures (massive.plots.figures) and HTML (pipeline.html, its templates, rules ablation and report), in memory
where possible: small DataFrames in, a Figure or HTML out; the report rendered from fixture outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import topics.report
from helpers import REPO, assert_one_line_error, run_module
from topics.report import SWEEP, job_dir, ppl_table

results = topics.report.results  # the fixture of tests/topics/report.py


def test_plots_import_no_pyplot_and_no_pipeline():
    code = (
        "import sys, massive.plots.figures; bad = [m for m in sys.modules if m == 'matplotlib.pyplot' or "
        "m.split('.')[0] in ('pipeline', 'hydra', 'omegaconf', 'wandb')]; print(bad); assert not bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ablation_rule_fails_on_a_nan_perplexity_in_one_line(tmp_path):
    from pipeline import jobs
    from pipeline import sweep as sweeps

    sweep = tmp_path / "nan.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "models": ["tiny_random"],
                "corpora": ["news_sample"],
                "ablate": {"interventions": ["none", "zero", "mean"], "layers": ["emerge", "all"]},
            }
        )
    )
    plan = jobs.Plan(sweeps.load(str(sweep)), str(sweep))
    for layers, zero in [("emerge", 4000.0), ("all", float("nan"))]:
        folder = tmp_path / plan.dir("ablate", "tiny_random", "news_sample", layers)  # the sweep's keyed folder
        folder.mkdir(parents=True)
        table = pa.Table.from_pandas(
            ppl_table(layers, {"none": 20.0, "zero": zero, "mean": 20.1}), preserve_index=False
        )
        config = yaml.safe_dump({"model": {"name": "tiny_random", "dtype": "float16"}})  # as write_table's provenance
        pq.write_table(
            table.replace_schema_metadata({**table.schema.metadata, b"config": config.encode()}),
            folder / "perplexity.parquet",
        )
        pq.write_table(pa.Table.from_pandas(pd.DataFrame({"layer": [0]})), folder / "regrowth.parquet")  # read too
    proc = run_module("ablation", f"sweep_name={sweep}", f"paths.root={tmp_path}", "wandb.mode=disabled")
    assert_one_line_error(
        proc,
        "nan",
        "tiny_random",
        "news_sample",
        "layers all, blocks 1",
        "intervention zero",
        "dtype float16",
        "bfloat16",
    )
    assert not list((tmp_path / "results").glob("ablation_nan.*"))  # no table, figure or section with a verdict


# ---------------------------------------------------------------- HTML


def test_report_renders_every_section(results, compose_in, tmp_path):
    from pipeline import ablation, html, report

    sweep = tmp_path / "golden.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    cfg = compose_in(f"sweep_name={sweep}")
    table = ablation.verdicts(
        pd.concat(
            [
                pd.read_parquet(job_dir(results, "ablate", "tiny_random", "news_sample", la) / "perplexity.parquet")
                for la in ("emerge", "all")
            ],
            ignore_index=True,
        ),
        2.0,
    )
    (results / "ablation_golden.html").write_text(html.ablation_section(table))
    page = report.render(cfg)
    heads = [
        '<section id="headline"',
        "<h2>Summary of the sweep</h2>",
        '<nav class="contents"',
        "<h2>Layerwise |a|, every model</h2>",
        "<h2>tiny_random</h2>",
        '<h3 class="pair">tiny_random on news_sample</h3>',
        "<h3>Attention: tiny_random on news_sample</h3>",
        "<h2>vit_random</h2>",
        '<h3 class="pair">vit_random on photos</h3>',
        '<h2 id="protocols">Sequence protocols</h2>',
        '<h2 id="outliers">Massive activations vs outlier features</h2>',
        "<h2>Vision transformers: interventions</h2>",
        "<h2>Ablation: massive activations",
        "<h2>Retraining: cpu_backcopy</h2>",
        "<h2>Provenance</h2>",
    ]
    at = [page.index(h) for h in heads]
    assert at == sorted(at), "sections out of order"
    assert page.count("<h3>Detected massive activations") == 2
    shown = page.count("data:image/png;base64,") - html.plotly_js().count("data:image/png;base64,")
    assert shown == 2 * 3 + 2 + 1 + 2  # figures (prompt_3d + 2 static), attention, ablation, training
    assert 'alt="ablation"' in page and "Attention: vit_random" not in page
    # one file that works offline: plotly.js once, inline; nothing loaded from elsewhere
    assert page.count("* plotly.js v") == 1 and "<script src" not in page and "<link" not in page
    assert page.count('class="plotly-graph-div"') == 2 * 2 + 1  # per pair: layerwise, token map; the sweep's curves
    # the contents link every model section, every corpus tab and every sweep-level section
    contents = page[page.index('<nav class="contents"') : page.index("</nav>")]
    for target in [
        "summary",
        "layerwise",
        "m-tiny_random",
        "p-tiny_random-news_sample",
        "m-vit_random",
        "p-vit_random-photos",
        "s-0",
        "s-1",
        "s-2",
        "s-3",
        "s-4",
        "provenance",
    ]:
        assert f'href="#{target}"' in contents and f'id="{target}"' in page, target
    assert '<a href="#s-3">Ablation: massive activations set to zero, to their mean, and three controls</a>' in contents
    assert page.count('<button role="tab"') == 2 and page.count('role="tabpanel"') == 2
    assert "protocol no_bos (model.bos=auto)" in page and "<td>tiny_random</td>" in page.split('id="protocols"')[1]


def summary_rows(page: str) -> list[list[str]]:
    """The summary table of a report page: its body's rows, cells as text."""
    block = page[page.index('<section id="summary">') :]
    block = block[: block.index("</section>")]
    body = block[block.index("<tbody>") : block.index("</tbody>")]
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_summary_has_one_row_per_model_and_corpus(results, compose_in, tmp_path):
    from pipeline import html, report
    from pipeline import sweep as sweeps

    sweep = tmp_path / "golden.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    (results / "ablation_golden.html").write_text("<h2>Ablation</h2>")
    rows = summary_rows(report.render(compose_in(f"sweep_name={sweep}")))
    assert (
        [(r[0], r[1]) for r in rows]
        == sweeps.pairs(SWEEP)
        == [("tiny_random", "news_sample"), ("vit_random", "photos")]
    )
    sink = json.loads((job_dir(results, "attention", "tiny_random", "news_sample") / "summary.json").read_text())[
        "sink_1_share"
    ]
    assert rows[0][2:] == [
        "none found",
        "",
        "",
        "-",
        "-",
        "-",
        "emerge: none found (zero ×1 [1, 1])all: none found (zero ×1 [1, 1])",
        f"{sink:.2f}",
    ]  # one line per layers value (<br>)
    assert rows[1][2:] == ["none found", "", "", "-", "-", "-", "-", "-"]  # no text ablation, no attention for a ViT

    # a sweep of 2 models x 2 corpora: 4 rows; found, dims, ratio; an ablation table with an interval
    found = {
        "found": True,
        "dims": [507, 247],
        "roles": ["first"],
        "emerge_layer": 11,
        "largest_mean_value": -24523.3,
        "largest_ratio": 13499.0,
    }
    sections = [
        {
            "model": m,
            "corpus": c,
            "id": html.slug("p", m, c),
            "attention": {"sink_1_share": 0.552} if m == "a" else None,
            "result": found if c == "x" else {"found": False, "dims": [], "roles": [], "emerge_layer": None},
        }
        for m in ("a", "b")
        for c in ("x", "y")
    ]
    abl = pd.DataFrame(
        {
            "model": "a",
            "corpus": "x",
            "layers": "emerge",
            "intervention": ["none", "zero"],
            "verdict": "inconclusive",
            "ratio": [1.0, 1.0512],
            "ratio_low": [1.0, 0.98],
            "ratio_high": [1.0, 1.1234],
        }
    )
    t = html.summary(sections, abl)
    assert [(r.model, r.corpus) for r in t.itertuples()] == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    assert t.iloc[0].tolist() == [
        "a",
        "x",
        "yes",
        "507, 247",
        "first",
        11,
        24523.3,
        13499.0,
        "emerge: inconclusive (zero ×1.05 [0.98, 1.12])",
        0.552,
    ]
    assert t["ablation"].isna().tolist() == [False, True, True, True]
    assert html.interval_columns(abl.drop(columns="ratio_high")) is None
    assert html.interval_columns(abl.rename(columns={"ratio_low": "ci_low", "ratio_high": "ci_high"})) == (
        "ci_low",
        "ci_high",
    )
    rows = summary_rows(f'<section id="summary">{html.summary_table(sections, abl)}</section>')
    assert len(rows) == 4 and rows[0][5:8] == ["11", "24,523.3", "13,500"]
