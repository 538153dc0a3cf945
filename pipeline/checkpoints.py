"""Massive activations over training: the runs of a sweep's `revisions` section side by side.

A sweep's `revisions` section (conf/sweep/checkpoints.yaml: Pythia's step0 ... step143000) measures
each listed model at each revision, a run `<model>@<revision>` (pipeline/paths.py) with its own
fetch and results. Here they are read back per model and corpus, one row per revision, ordered by
the training step its name gives (step_of): whether massive activations are found, the largest
ratio to the layer median and the block where they emerge (rule detect's summary.json), and the
Sink_1 share, the mass on the first token and, for a learned sink, its share (rule attention's,
where the sweep has it). The report draws the three against the step (`figure`, `section`).

    >>> step_of("step1000"), step_of("stage1-step928646-tokens3896B"), step_of("checkpoint-500"), step_of("main")
    (1000, 928646, 500, None)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from pipeline import paths

# a training step in a revision's name: Pythia step1000, OLMo stage1-step1000-tokens5B, a trainer's
# checkpoint-1000, global_step1000
STEP = re.compile(r"(?:^|[^A-Za-z])(?:step|checkpoint|ckpt|iter)[-_]?([0-9]+)", re.I)
COLUMNS = [
    "model",
    "corpus",
    "revision",
    "step",
    "found",
    "largest_ratio",
    "emerge_layer",
    "largest_mean_value",
    "sink_1_share",
    "mass_first_mean",
    "mass_sink_mean",
]
PANELS = [
    ("largest_ratio", "largest |a| / median |a|", "log"),
    ("emerge_layer", "emerge block", "linear"),
    ("sink_1_share", "Sink_1 share of heads", "linear"),
]


def step_of(revision: str) -> int | None:
    """The training step a revision's name gives, None when it names none (main, a commit)."""
    m = STEP.search(revision)
    return int(m.group(1)) if m else None


def _json(folder: Path | None) -> dict:
    f = folder / "summary.json" if folder is not None else None
    return json.loads(f.read_text()) if f is not None and f.is_file() else {}


def table(where, sweep: dict) -> pd.DataFrame:
    """One row per revision run of the sweep and corpus (COLUMNS), in the order of the training step
    (where every revision of a model names one; else as listed). `where(rule, run, corpus)`: a job's
    keyed folder (pipeline.jobs.Plan.where)."""
    rows = []
    for model, revisions in (sweep.get("revisions") or {}).items():
        order = sorted(revisions, key=step_of) if all(step_of(r) is not None for r in revisions) else list(revisions)
        for corpus in sweep["corpora"]:
            for revision in order:
                run = paths.run_name(model, revision)
                det, att = _json(where("detect", run, corpus)), _json(where("attention", run, corpus))
                found = bool(det.get("found"))
                rows.append(
                    {
                        "model": model,
                        "corpus": corpus,
                        "revision": revision,
                        "step": step_of(revision),
                        "found": "yes" if found else ("none found" if det else "-"),
                        "largest_ratio": det.get("largest_ratio") if found else None,
                        "emerge_layer": det.get("emerge_layer") if found else None,
                        "largest_mean_value": abs(det["largest_mean_value"]) if found else None,
                        "sink_1_share": att.get("sink_1_share"),
                        "mass_first_mean": att.get("mass_first_mean"),
                        "mass_sink_mean": att.get("mass_sink_mean") if att.get("explicit_sink") else None,
                    }
                )
    out = pd.DataFrame(rows, columns=COLUMNS)
    for col in COLUMNS[5:]:
        out[col] = pd.to_numeric(out[col], errors="coerce")  # None -> NaN: a gap in the figure, '-' in the table
    out["step"] = out["step"].astype("Int64")
    return out


def readings(t: pd.DataFrame) -> list[str]:
    """Per model and corpus, in words: the first revision where they are found, and the last one's numbers."""
    out = []
    for (model, corpus), g in t.groupby(["model", "corpus"], sort=False):
        found = g[g["found"] == "yes"]
        if not len(found):
            out.append(f"{model} on {corpus}: none found at any of its {len(g)} revisions")
            continue
        first, last = found.iloc[0], g.iloc[-1]
        text = (
            f"{model} on {corpus}: first found at {first['revision']} (largest {first['largest_ratio']:,.0f}x the median, "
            f"from block {int(first['emerge_layer'])})"
        )
        if last["found"] == "yes" and last["revision"] != first["revision"]:
            text += f"; at {last['revision']}: {last['largest_ratio']:,.0f}x, from block {int(last['emerge_layer'])}"
        out.append(text)
    return out


def figure(t: pd.DataFrame):
    """The largest ratio, the emerge block and the Sink_1 share against the training step, a line per
    model and corpus (a Plotly figure). The step axis is logarithmic (step + 1, so step0 is on it) when
    the steps span more than two decades, as Pythia's do; revisions without a step are placed in order."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    from massive.plots.interactive import FONT

    by_step = t["step"].notna().all() and len(t)
    steps = t["step"].astype(float) if by_step else None
    log = bool(by_step and steps.max() >= 100 * max(steps[steps > 0].min() if (steps > 0).any() else 1, 1))
    fig = make_subplots(
        rows=1, cols=len(PANELS), subplot_titles=[title for _, title, _ in PANELS], horizontal_spacing=0.08
    )
    groups = list(t.groupby(["model", "corpus"], sort=False))
    palette = qualitative.D3
    for i, ((model, corpus), g) in enumerate(groups):
        x = (g["step"].astype(float) + (1 if log else 0)) if by_step else g["revision"]
        for j, (col, title, _) in enumerate(PANELS):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=g[col],
                    mode="lines+markers",
                    name=f"{model} on {corpus}",
                    legendgroup=f"{model}/{corpus}",
                    showlegend=j == 0,
                    line={"color": palette[i % len(palette)]},
                    marker={"size": 6},
                    customdata=g["revision"],
                    hovertemplate=f"{model} on {corpus}<br>%{{customdata}}<br>{title} %{{y:,.4~r}}<extra></extra>",
                ),
                row=1,
                col=j + 1,
            )
    for j, (_, _, scale) in enumerate(PANELS):
        fig.update_yaxes(type=scale, row=1, col=j + 1, **({"dtick": 1, "tickformat": ",~g"} if scale == "log" else {}))
        fig.update_xaxes(
            type="log" if log else ("linear" if by_step else "category"),
            row=1,
            col=j + 1,
            title_text="training step + 1" if log else ("training step" if by_step else "revision"),
        )
    fig.update_layout(
        font=FONT, height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50}, template="plotly_white", hovermode="closest"
    )
    return fig


def section(where, sweep: dict) -> Markup:
    """The report's section: the figure, the readings and the table."""
    from pipeline import html

    t = table(where, sweep)
    shown = t.assign(step=t["step"].astype(object).where(t["step"].notna(), "-"))
    if not shown["mass_sink_mean"].notna().any():
        shown = shown.drop(columns=["mass_sink_mean"])
    return html.render(
        "checkpoints.html.j2",
        figure=html.figure(figure(t), "fig-checkpoints"),
        readings=readings(t),
        table=html.table(shown, float_format=lambda v: f"{v:,.4g}"),
        attention=bool(sweep.get("attention")),
    )
