"""Figures (massive.plots.figures) and HTML (pipeline.html, its templates, rules ablation and report), in memory
where possible: small DataFrames in, a Figure or HTML out; the report rendered from fixture outputs."""

from __future__ import annotations

import ast
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from massive.core.errors import NonFiniteError
from massive.plots import figures as plots

import topics.report
from helpers import REPO
from topics.report import job_dir, ppl_table

results = topics.report.results  # the fixture of tests/topics/report.py


def png_of(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


# ---------------------------------------------------------------- figures
def test_every_figure_is_a_figure_of_plain_tables():
    stats = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "top1_abs": [3.0, 4.0, 900.0, 800.0],
            "top2_abs": [2.0, 2.0, 80.0, 70.0],
            "top3_abs": [1.5, 1.0, 40.0, 30.0],
            "median_abs": [0.4, 0.4, 0.5, 0.5],
        }
    )
    prompt = pd.DataFrame(
        [
            {"layer": lay, "position": t, "token": f"t{t}\n", "values": np.arange(8, dtype="float32") * (t + 1)}
            for lay in range(2)
            for t in range(4)
        ]
    )
    vit = pd.DataFrame(
        [{"layer": 0, "position": t, "token": f"p{t}", "values": np.full(4, t + 1.0)} for t in range(50)]
    )
    ablation = pd.concat(
        [ppl_table("emerge", {"none": 20.0, "zero": 4000.0}), ppl_table("all", {"none": 20.0, "zero": 30.0})]
    )
    layers = pd.DataFrame(
        {
            "layer": [0, 1],
            "mass_first": [0.2, 0.9],
            "mass_massive": [0.2, 0.9],
            "sink_1_share": [0.0, 1.0],
            "top1_over_median": [3.0, 2000.0],
        }
    )
    logits = torch.randn(1, 2, 3, 3).masked_fill(torch.ones(3, 3).triu(1).bool(), float("-inf"))
    history = pd.DataFrame(
        {
            "step": [0, 0, 10, 10],
            "layer": [0, 1, 0, 1],
            "first_attn": [0.1, 0.1, 0.9, 0.5],
            "slot_attn": [0.0, 0.0, 0.1, 0.2],
            "start_over_median": [1.0, 1.0, 30.0, 80.0],
            "top1_at_start": [0.0, 0.0, 1.0, 0.5],
            "start_value_ratio": [1.0, 1.0, 0.3, 0.5],
        }
    )
    finals = [
        {"layer": 0, "top1_over_median": 3.0, "start_over_median": 1.0},
        {"layer": 1, "top1_over_median": 90.0, "start_over_median": 60.0},
    ]
    scale = pd.DataFrame(
        {
            "variant": ["default", "default", "attn_bias", "attn_bias"],
            "n_layer": [2] * 4,
            "n_embd": [128, 256] * 2,
            "start_over_median": [30.0, 50.0, 10.0, 9.0],
            "start_over_median_sqrt_d": [2.6, 3.1, 0.9, 0.6],
            "start_attn": [0.9, 0.95, 0.0, 0.0],
            "slot_attn": [0.0, 0.0, 0.97, 0.98],
            "val_loss": [2.85, 2.84, 2.83, 2.82],
        }
    )
    figs = [
        plots.layerwise(stats, "m on c"),
        plots.prompt_3d(prompt, 1, "m: 'abc'"),
        plots.token_map(prompt, "m"),
        plots.token_map(vit, "vit"),
        plots.ablation(ablation),
        plots.heatmaps({0: {"logits": logits}, 1: {"logits": logits}}, [0, 1], list("abc"), 0, "m"),
        plots.sink_curve(layers, 0, 1, "m"),
        plots.sink_curve(layers.drop(columns="top1_over_median"), None, None, "m"),
        plots.train_emergence({"default": history, "gated": history}),
        plots.train_layerwise({"default": finals}),
        plots.train_scale(scale),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        assert png_of(fig).startswith(b"\x89PNG")
    assert "the first 6 and the 34 largest of 50 tokens" in figs[3].axes[0].get_title()
    forest = figs[4].axes[0]  # the ablation: a forest plot of the ratio to none, log axis
    assert forest.get_xscale() == "log" and [t.get_text() for t in forest.get_yticklabels()] == ["zero", "zero"]
    with_control = plots.ablation(ppl_table("emerge", {"none": 20.0, "zero": 4000.0, "random_zero": 20.1})).axes[0]
    assert [t.get_text() for t in with_control.get_yticklabels()] == ["zero", "random_zero (control)"]
    bars = [line.get_xdata() for line in with_control.get_lines() if len(line.get_xdata()) == 2]
    assert any(np.allclose(sorted(b), [200 * 0.98, 200 * 1.02]) for b in bars), bars  # zero's 95% interval


def test_interactive_figures_hold_the_tables_values():
    from massive.plots import interactive

    stats = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "top1_abs": [3.0, 4.0, 900.0, 800.0],
            "top2_abs": [2.0, 2.0, 80.0, 70.0],
            "top3_abs": [1.5, 1.0, 40.0, 30.0],
            "median_abs": [0.4, 0.4, 0.5, 0.5],
        }
    )
    fig = interactive.layerwise({("m1", "c1"): stats, ("m1", "c2"): stats * 2, ("m2", "c1"): stats})
    assert [(t.legendgroup, t.name) for t in fig.data] == [
        ("m1", "c1: top 1"),
        ("m1", "c1: median"),
        ("m1", "c2: top 1"),
        ("m1", "c2: median"),
        ("m2", "c1: top 1"),
        ("m2", "c1: median"),
    ]
    assert list(fig.data[0].y) == [3.5, 850.0]  # the mean over sequences, per layer
    assert fig.layout.legend.groupclick == "togglegroup" and fig.layout.yaxis.type == "log"  # a click toggles a model
    assert interactive.layerwise({("m1", "c1"): stats}).layout.legend.groupclick == "toggleitem"  # one model: a line
    assert "layer %{x}" in fig.data[0].hovertemplate and "m1 on c1" in fig.data[0].hovertemplate
    # a prompt of 4 tokens; token 2 is largest in dim 5 after layer 1
    prompt = pd.DataFrame(
        [
            {
                "layer": lay,
                "position": t,
                "token": f"t{t}",
                "values": np.eye(8)[5 if t == 2 else 0] * (t + 1) * (lay + 1),
            }
            for lay in range(2)
            for t in range(4)
        ]
    )
    heat = interactive.token_map(prompt).data[0]
    assert list(heat.y) == ["0: t0", "1: t1", "2: t2", "3: t3"] and list(heat.x) == [0, 1]
    assert heat.customdata[2, 1].tolist() == [6.0, 5.0] and np.isclose(heat.z[2, 1], np.log10(6.0))
    assert "token %{y}" in heat.hovertemplate and "dim %{customdata[1]}" in heat.hovertemplate
    vit = pd.DataFrame(
        [{"layer": 0, "position": t, "token": f"p{t}", "values": np.full(4, t + 1.0)} for t in range(50)]
    )
    vit_map = interactive.token_map(vit, "vit")
    assert len(vit_map.data[0].y) == 40 and "the first 6 and the 34 largest of 50 tokens" in vit_map.layout.title.text


def test_columns_label_and_format_every_cell():
    from pipeline import columns, html

    assert (
        columns.sig3(13499.03) == "13,500"
        and columns.sig3(1.02485) == "1.02"
        and columns.sig3(0.000123456) == "0.000123"
    )
    assert columns.sig3(999.7) == "1,000" and columns.sig3(-30814.07) == "-30,800" and columns.sig3(0.0) == "0"
    t = pd.DataFrame(
        {
            "dim": [2533],
            "ratio_at_peak": [13499.03],
            "n_tokens": [4080],
            "perplexity": [1026792.87],
            "fade_layer": [np.nan],
            "writes": [True],
            "tokens": ["<s>"],
            "unlisted": [0.123456],
        }
    )
    page = str(html.table(t))
    heads = re.findall(r'<th title="([^"]+)"(?: data-key)?>([^<]+)</th>', page)
    assert heads == [
        ("dim", "dim"),
        ("ratio_at_peak", "× median at peak"),
        ("n_tokens", "tokens"),
        ("perplexity", "perplexity"),
        ("fade_layer", "gone from block"),
        ("writes", "writes it"),
        ("tokens", "tokens"),
        ("unlisted", "unlisted"),
    ]
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert cells == ["2533", "13,500", "4,080", "1,026,793", "-", "yes", "&lt;s&gt;", "0.123"]
    assert (
        page.count("data-key") == 1 and '<th title="ratio_at_peak" data-key>' in page
    )  # the column the table is read for
    wide = str(
        html.table(t, main=["dim", "ratio_at_peak"], ids=("dim",))
    )  # the others behind a toggle, with the dim repeated
    assert '<details class="more"><summary>Details: the other 6 column(s)</summary>' in wide
    assert wide.count('<th title="dim">') == 2 and wide.count('<th title="n_tokens">') == 1
    assert columns.label("float16: headroom") == "float16: headroom (×)" and columns.is_key("float16: headroom")
    assert columns.cell("positions", np.array([0, 3])) == "0, 3" and columns.cell("dims", [247, 507]) == "247, 507"
    assert page.startswith('<div class="table-wrap">')  # every table scrolls in its own box
    assert str(html.table(t.iloc[:0], none_found=True)) == "<p><em>none found</em></p>"


def test_save_figure_writes_a_png_atomically(tmp_path):
    from pipeline.html import save_figure

    out = save_figure(plots.ablation(ppl_table("emerge", {"none": 20.0, "zero": 40.0})), tmp_path / "a" / "fig.png", 50)
    assert out.read_bytes().startswith(b"\x89PNG")
    # fonts raised so that none is under 10.5 px where the report shows it (at most 1,000 px wide), and recorded
    wide = plots.new_figure((20, 3))
    wide.subplots().set_title("a title", fontsize=6)
    shown = save_figure(wide, tmp_path / "a" / "wide.png", 100, tight=False)
    from pipeline.html import png

    assert png(shown).font_px == pytest.approx(21.0, abs=0.1)  # 2,000 px wide, shown at half size: 10.5 px on the page
    with pytest.raises(ValueError):
        save_figure(Figure(), tmp_path / "bad.png", dpi=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no partial file left behind


# ---------------------------------------------------------------- verdicts
def test_verdicts():
    from pipeline.ablation import verdicts

    table = pd.concat(
        [
            ppl_table("emerge", {"none": 20.0, "zero": 4000.0, "mean": 20.1}),
            ppl_table("all", {"none": 20.0, "zero": 30.0}),
            ppl_table("2", {"none": 20.0, "zero": 20.4}),
            ppl_table("4", {"none": 20.0, "zero": 40.4}, spread=0.1),
            ppl_table("1_2", {"none": 20.0, "mean": 21.0}),
            ppl_table("3", {"none": 20.0, "zero": 20.0}, dims=""),
        ],
        ignore_index=True,
    )
    out = verdicts(table, factor=2.0, harmless=1.1)
    got = out.groupby("layers")["verdict"].first().to_dict()
    # x200: harmful; x1.5 +-2%: between the factors; x1.02 +-2%: below 1.1; x2.02 +-10%: straddles 2
    assert got == {
        "emerge": "harmful",
        "all": "inconclusive",
        "2": "harmless",
        "4": "inconclusive",
        "1_2": "no zero run",
        "3": "none found",
    }
    assert out.set_index(["layers", "intervention"]).loc[("emerge", "mean"), "effect"] == "harmless"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_perplexity_is_never_a_verdict(bad):
    from pipeline.ablation import verdicts

    table = ppl_table("emerge", {"none": 20.0, "zero": bad, "mean": 20.1})
    with pytest.raises(
        NonFiniteError,
        match=rf"perplexity of tiny_random on news_sample \(layers emerge, blocks 1, intervention zero\) is {bad}.*float16",
    ):
        verdicts(table, 2.0, dtypes={"tiny_random": "float16"})
    table = ppl_table("emerge", {"none": bad, "zero": 20.0}, dims="")  # even where nothing was found
    with pytest.raises(NonFiniteError, match="intervention none"):
        verdicts(table, 2.0)


# ---------------------------------------------------------------- HTML


def test_sections_render_the_rules_outputs(results):
    from pipeline import html
    from pipeline.ablation import verdicts

    att = html.attention_section(
        job_dir(results, "attention", "tiny_random", "news_sample"), "tiny_random", "news_sample"
    )
    assert "<h3>Attention: tiny_random on news_sample</h3>" in att
    assert "Massive tokens: first token (none detected); massive activations emerge after block -;" in att
    assert "mean attention on the first token 0.059." in att
    assert "<li>massive: rel_std 1.31, cos to mean 0.613</li>" in att
    assert "<td>massive_mean</td>" in att and "<td>267.56</td>" in att  # perplexity table, 2 decimals
    assert att.count("data:image/png;base64,") == 2

    vision = html.vision_section(
        [job_dir(results, "ablate_images", "vit_random", "photos", "emerge") / "images.parquet"]
    )
    assert "<h2>Vision transformers: interventions</h2>" in vision and "<td>fix_register_mean</td>" in vision
    assert "DINOv2-reg ViT-S" in vision and "<td>81.9</td>" in vision  # the paper's numbers

    table = verdicts(
        pd.concat(
            [
                pd.read_parquet(job_dir(results, "ablate", "tiny_random", "news_sample", la) / "perplexity.parquet")
                for la in ("emerge", "all")
            ],
            ignore_index=True,
        ),
        2.0,
    )
    section = html.ablation_section(table)
    assert section.startswith("<h2>Ablation: massive activations set to zero")
    assert "<td>none found</td>" in section and "<td>268.18</td>" in section and "<td>8,115</td>" in section
    assert section.count("<h4>tiny_random on news_sample</h4>") == 1  # one table per model and corpus
    assert "Zero-shot" not in section
    zs = pd.DataFrame(
        {
            "model": "tiny_random",
            "layers": "emerge",
            "task": "piqa",
            "metric": ["acc", "acc", "acc_stderr"],
            "intervention": ["none", "zero", "none"],
            "value": [0.61234, 0.5, 0.01],
        }
    )
    assert "<td>0.612</td>" in html.ablation_section(table, [zs]) and "acc_stderr" not in html.ablation_section(
        table, [zs]
    )

    train = html.training_section(results / "train/cpu_backcopy", "cpu_backcopy")
    assert (
        "<h2>Retraining: cpu_backcopy</h2>" in train and "<td>1,230</td>" in train and "<td>12.2</td>" in train
    )  # ratios: 3 significant digits
    assert "start token 40.0x the median (layer 0;" in train and "top-1 entry in 100% of probe sequences" in train
    assert "contrast to default 4.0x at the final step (validation loss -0.1000)" in train
    assert "5.5x at matched loss (gap -0.0040: this variant at step\n    300, default at step 500)" in train


def test_html_escapes_what_it_shows(results):
    from pipeline import html

    det = job_dir(results, "detect", "tiny_random", "news_sample")
    summary = {**json.loads((det / "summary.json").read_text()), "message": "<script>x</script>"}
    (det / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"dim": [1], "tokens": ["<b>bold</b>"]}).to_parquet(det / "summary.parquet")
    s = html.pair_section(
        {stage: job_dir(results, stage, "tiny_random", "news_sample") for stage in ("capture", "detect", "figures")},
        "tiny_random",
        "news_sample",
    )
    page = html.report("x", [s], [], 100, 1000, {"git_commit": "abc", "packages": "{}", "seed": "0"})
    assert "<script>x</script>" not in page and "&lt;script&gt;x" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_no_rule_module_imports_another():
    rules = {"ablation", "report", "figures"}
    # a rule module is one with an entry point (cli.main); the rest are the pipeline's shared modules
    every_rule = {p.stem for p in (REPO / "pipeline").glob("*.py") if "cli.main(" in p.read_text()}
    for name in rules:
        tree = ast.parse((REPO / "pipeline" / f"{name}.py").read_text())
        imported = {
            a.name.split(".")[1]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
            if a.name.startswith("pipeline.")
        }
        imported |= {
            n.module.split(".")[1]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("pipeline.")
        }
        imported |= {
            a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "pipeline" for a in n.names
        }
        assert not imported & every_rule, (name, imported & every_rule)
        assert "matplotlib" not in (REPO / "pipeline" / f"{name}.py").read_text()
        assert "PipelineError" not in (REPO / "pipeline" / f"{name}.py").read_text()


def test_docstring_examples_run():
    import doctest

    from pipeline import ablation, html

    for module in (plots, html, ablation):
        assert doctest.testmod(module).failed == 0, module.__name__
