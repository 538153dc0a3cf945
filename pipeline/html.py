"""The report's HTML, every piece of it from the Jinja templates in pipeline/templates/ (not a rule).

One Jinja environment with autoescape on; every table comes from `table` (_table.html.j2: the cells
escaped, headings and formats from pipeline/columns.py) and goes into the templates marked safe.
Each section function reads the outputs of one rule and returns its HTML:

  table             any DataFrame, headings and number formats from pipeline/columns.py
  headline          one sentence per model: what was found, where, how big, what zeroing does (with its interval)
  summary           the sweep's summary table: one row per (model, corpus)
  pair_section      detect/, capture/ and figures/ of one model on one corpus (+ its attention
                    and origins sections), with the interactive layerwise curves and token map
  attention_section attention/summary.json, perplexity.parquet, heatmaps.png, sink_curve.png
  origins_section   origins/sublayers.parquet, superweights.parquet, perplexity.parquet, contributions.png
  inference_section inference/summary.json, headroom, quantization and window .parquet, both figures
  vision_section    every images.parquet of the sweep's vision part, beside the paper's numbers
  ablation_section  the ablation rule's results/ablation_<sweep>.html (its table, the paper's, zero-shot)
  ablation_block    that file and its figure, for the report
  training_section  results/train/<name>/comparison.parquet, emergence.png, layerwise.png
  training_scale_section  results/train/<config>_scale/scale.parquet, scale.png
  report            the whole page (report.html.j2): contents, summary, one section per model
                    with a tab per corpus, then the sweep-level sections

The page is one file that works offline: PNGs are embedded as base64, and plotly.js (from the
plotly package) is embedded once for the interactive figures (massive.plots.interactive).
  protocols_section every run's sequence protocol, the contrast between protocols per model, and
                    massive activations vs outlier features (detect/, attention/, ablate/ of each run)

    >>> from pipeline import html
    >>> html.table(pd.DataFrame({"layer": [0], "top1_abs": [1234.5]}))[:24]
    Markup('<div class="table-wrap">')

Also here, for every rule that writes a figure: `save_figure(fig, path, dpi)`, atomically.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jinja2
import pandas as pd
import plotly.io
import plotly.offline
import yaml
from markupsafe import Markup

from massive.core.results import AttentionTables, InferenceTables, OriginsTables, RetrofitTables
from massive.measure.detect import MIN_RATIO
from massive.plots import interactive
from pipeline import columns, paths
from pipeline.cli import CONF_DIR
from pipeline.io import atomic_path, read_table

TEMPLATES = Path(__file__).parent / "templates"
FIGURES = ["prompt_3d"]  # rule figures' PNGs shown as they are; the others are drawn interactively too
STATIC = ["layerwise", "token_map"]  # PNGs of the interactive figures: in a collapsed block, for papers
INTERACTIVE = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
VISION_COLUMNS = [
    "model",
    "corpus",
    "intervention",
    "layers",
    "blocks",
    "dims",
    "n_images",
    "cls_cosine",
    "cls_cosine_min",
    "cls_rel_change",
    "top1",
    "zeroshot_top1",
    "entries_changed",
    "note",
]
VISION_MAIN = [
    "model",
    "corpus",
    "intervention",
    "layers",
    "blocks",
    "n_images",
    "cls_cosine",
    "cls_cosine_min",
    "top1",
    "zeroshot_top1",
    "entries_changed",
]


SHOWN_PX = 1000  # the widest a figure is shown in the report (its column at a 1,200 px window); wider PNGs are shrunk
MIN_FONT_PX = 10.5  # the smallest font a figure may show there (tests/e2e/test_browser.py checks >= 10 px)


def save_figure(fig, path: str | Path, dpi: int, tight: bool = True) -> Path:
    """Write a matplotlib figure as PNG, atomically (a failure leaves no file behind), its fonts raised
    so that none is under MIN_FONT_PX when the report shows it (massive.plots.figures.legible); the PNG
    records its smallest font in pixels (text chunk `min_font_px`), which the report passes on to the page.

        >>> save_figure(plots.layerwise(layer_stats, "m on c"), out / "layerwise.png", cfg.figures.dpi)  # doctest: +SKIP
    """
    from massive.plots import figures as plots

    plots.legible(fig, dpi, SHOWN_PX, MIN_FONT_PX)
    font = plots.min_font_px(fig, dpi)
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            dpi=dpi,
            format="png",
            metadata={"min_font_px": f"{font:.2f}"} if font else None,
            **({"bbox_inches": "tight"} if tight else {}),
        )
    return Path(path)


# ---------------------------------------------------------------- the environment and its filters
number = columns.magnitude  # the default format of a float column that pipeline/columns.py does not list


def value(v) -> str:
    """A summary value: '-' for none, 3 decimals for a float, else as it is."""
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def slug(*names: str) -> str:
    """An HTML id from names: 'm-smollm2_135m-wiki_sample'."""
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", str(n)) for n in names)


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
ENV.filters.update(value=value, fmt=format, slug=slug, sig3=columns.sig3)


def render(template: str, **context) -> Markup:
    """One template of pipeline/templates/ rendered, as safe HTML."""
    return Markup(ENV.get_template(template).render(**context).strip())


def table(
    df: pd.DataFrame,
    float_format=number,
    none_found: bool = False,
    main: list[str] | None = None,
    ids: tuple[str, ...] = (),
) -> Markup:
    """A DataFrame as an HTML table in its own scrolling box: headings and number formats from
    pipeline/columns.py (the column's name on hover), `float_format` for the float columns it does not
    list, '-' for missing values; cells escaped (a Markup cell, e.g. a link, is kept); 'none found'
    when empty if asked. `main`: the columns that carry the finding, shown; the others follow behind
    a "details" toggle, in a second table that repeats the `ids` columns (which row is which)."""
    if none_found and df.empty:
        return Markup("<p><em>none found</em></p>")
    more = None
    if main is not None:
        rest = [c for c in df.columns if c not in main]
        more = table(df[[c for c in ids if c in df.columns and c not in rest] + rest], float_format) if rest else None
        df = df[[c for c in main if c in df.columns]]
    heads = [(str(c), columns.label(c), columns.is_key(str(c))) for c in df.columns]
    rows = [
        [v if isinstance(v, Markup) else columns.cell(str(c), v, float_format) for c, v in zip(df.columns, row)]
        for row in df.itertuples(index=False, name=None)
    ]
    return render(
        "_table.html.j2",
        heads=heads,
        rows=rows,
        more=more,
        more_label=f"Details: the other {len(rest)} column(s)" if more else "",
    )


class Png(str):
    """A PNG as base64 (what the page embeds), with `font_px`: its smallest font in its own pixels, where
    save_figure recorded it (None otherwise); the figure macro puts it on the <img> for the browser test."""

    font_px: float | None = None


def png(path: Path) -> Png:
    """A PNG file as base64, to embed in the page, with the smallest font save_figure recorded in it."""
    data = Path(path).read_bytes()
    out = Png(base64.b64encode(data).decode())
    m = re.search(rb"tEXtmin_font_px\x00([0-9.]+)", data[:4096])
    out.font_px = float(m.group(1)) if m else None
    return out


def plotly_js() -> Markup:
    """plotly.js, from the plotly package, to embed once in the page (no network needed)."""
    return Markup(plotly.offline.get_plotlyjs())


def figure(fig, div_id: str) -> Markup:
    """An interactive (Plotly) figure as a <div> and the script that draws it (plotly.js not included)."""
    return Markup(
        plotly.io.to_html(
            fig,
            include_plotlyjs=False,
            full_html=False,
            div_id=div_id,
            config=INTERACTIVE,
            default_width="100%",
            default_height=f"{fig.layout.height or 420}px",
        )
    )


def reference(key: str) -> pd.DataFrame:
    """One table of the paper's numbers (conf/reference/paper.yaml), for comparison only.

    >>> reference("perplexity").columns.tolist()[:3]
    ['model', 'corpus', 'none']
    """
    return pd.DataFrame(yaml.safe_load((CONF_DIR / "reference" / "paper.yaml").read_text())[key])


# ---------------------------------------------------------------- sections
RATIO_SHOWN = ["ratio", "ratio_lo", "ratio_hi", "verdict"]  # every comparison table's (massive.compare)


def attention_section(folder: Path, model: str, corpus: str) -> Markup:
    """Rule attention's numbers, perplexity table and both figures (folder: results/<model>/<corpus>/attention)."""
    saved = AttentionTables.load(folder)
    res, ppl = saved.result, saved.perplexity[["variant", "perplexity", *RATIO_SHOWN]]
    return render(
        "attention.html.j2",
        model=model,
        corpus=corpus,
        res=res,
        decomposition=res.get("decomposition_median_massive_in_input") or res.get("decomposition_median") or {},
        perplexity=table(ppl),
        images=[(f, png(folder / f"{f}.png")) for f in ("heatmaps", "sink_curve")],
    )


SUBLAYER_SHOWN = ["dim", "role", "block", "part", "contribution", "value", "share", "n_tokens", "writes", "parallel"]
SUPERWEIGHT_SHOWN = [
    "dim",
    "role",
    "block",
    "expert",
    "n_tokens",
    "channel",
    "input_value",
    "input_ratio",
    "param",
    "coordinate",
    "weight",
    "abs_rank",
    "share",
    "primary",
]
ORIGINS_PERPLEXITY = [
    "intervention",
    "kind",
    "edited",
    "weights_changed",
    "entries_changed",
    "massive_abs",
    "perplexity",
    *RATIO_SHOWN,
]


def origins_section(folder: Path, model: str, corpus: str) -> Markup:
    """Rule origins: the writing sublayers, the super weights, the perplexities and the figure
    (folder: results/<model>/<corpus>/origins), "Where they come from"."""
    saved = OriginsTables.load(folder)
    sub, sw, ppl = saved.sublayers, saved.superweights, saved.perplexity
    writers = []
    for _, w in sub[sub["writes"].astype(bool)].iterrows() if len(sub) else []:
        top = sw[(sw["dim"] == w["dim"]) & (sw["role"] == w["role"]) & sw["primary"].astype(bool)] if len(sw) else sw
        first = top.sort_values("n_tokens", ascending=False).iloc[0].to_dict() if len(top) else None
        if first is not None and pd.isna(first["expert"]):
            first["expert"] = None
        writers.append({**w.to_dict(), "superweight": first})
    return render(
        "origins.html.j2",
        model=model,
        corpus=corpus,
        writers=writers,
        sublayers=table(sub[SUBLAYER_SHOWN], none_found=True),
        superweights=table(sw[SUPERWEIGHT_SHOWN], none_found=True),
        perplexity=table(ppl[ORIGINS_PERPLEXITY]),
        images=[("contributions", png(folder / "contributions.png"))],
    )


RETROFIT_SHOWN = [
    "arm",
    "variant",
    "massive",
    "params",
    "step",
    "perplexity",
    "ratio_to_intact",
    "ratio_interval",
    "ratio_lo",
    "ratio_hi",
    "ratio_set_back",
    "set_back_lo",
    "set_back_hi",
]


def retrofit_section(folder: Path, model: str, corpus: str) -> Markup:
    """Rule retrofit: what an explicit attention bias recovers of the ablated model, in words, the
    arms' table and the recovery curves (folder: results/<model>/<corpus>/retrofit/<config id>)."""
    from massive.retrain.retrofit import reading

    saved = RetrofitTables.load(folder)
    summary, layers = saved.tables["summary"], saved.layers
    if len(summary) and {"ratio_lo", "ratio_hi"} <= set(summary.columns):
        summary = summary.assign(
            ratio_interval=[interval(lo, hi) for lo, hi in zip(summary["ratio_lo"], summary["ratio_hi"])]
        )
    else:
        summary = summary.assign(ratio_interval=None)
    first = summary.iloc[0] if len(summary) else None
    return render(
        "retrofit.html.j2",
        model=model,
        corpus=corpus,
        reading=reading(summary, layers),
        held=first["eval_chunks"] if first is not None else "",
        train=first["train_chunks"] if first is not None else "",
        seq_len=int(first["seq_len"]) if first is not None else 0,
        arms=table(
            summary[RETROFIT_SHOWN],
            none_found=True,
            main=["arm", "seed", "variant", "massive", "params", "perplexity", "ratio_to_intact", "ratio_interval"],
            ids=("arm", "seed"),
        ),
        images=[("recovery", png(folder / "recovery.png"))],
    )


def retrofit_overview(folders: list[tuple[str, str, Path]]) -> Markup:
    """The sweep's retrofit runs beside its from-scratch retraining (folders: (model, corpus,
    results/<model>/<corpus>/retrofit/<config id>)): each run's reading and recovery curves."""
    from massive.retrain.retrofit import reading

    runs = [
        {
            "model": m,
            "corpus": c,
            "id": slug("p", m, c),
            "reading": reading((saved := RetrofitTables.load(f)).tables["summary"], saved.layers),
            "images": [("recovery", png(f / "recovery.png"))],
        }
        for m, c, f in folders
    ]
    return render("retrofit_overview.html.j2", runs=runs)


QUANT_SHOWN = ["scheme", "label", "massive", "perplexity", *RATIO_SHOWN, "rel_error", "kept", "note"]
WINDOW_SHOWN = ["variant", "window", "sinks", "sink_massive", "perplexity", *RATIO_SHOWN, "entries_changed"]


def inference_section(folder: Path, model: str, corpus: str) -> Markup:
    """Rule inference: headroom, quantization and window tables and both figures
    (folder: results/<model>/<corpus>/inference), "What they cost at inference"."""
    saved = InferenceTables.load(folder)
    res, h = saved.result, saved.headroom
    shown, formats = (
        ["headroom", "spacing", "overflow", "measured_max_abs", "measured_inf", "measured_nan"],
        list(dict.fromkeys(h["format"])),
    )
    per_block = h.pivot_table(index=["layer", "max_abs", "dim"], columns="format", aggfunc="first", values=shown)
    per_block = per_block[[(col, fmt) for fmt in formats for col in shown]]
    per_block.columns = [f"{fmt}: {col}" for col, fmt in per_block.columns]
    per_block = per_block.reset_index()
    headroom_main = [
        "layer",
        "max_abs",
        "dim",
        *(f"{fmt}: {col}" for fmt in formats for col in ("headroom", "measured_max_abs")),
    ]
    q, w = saved.quantization, saved.window
    w["window"] = w["window"].astype(object).where(w["window"].notna(), "-")
    return render(
        "inference.html.j2",
        model=model,
        corpus=corpus,
        res=res,
        with_mean="mean" in set(q["massive"]),
        headroom=table(per_block, main=headroom_main, ids=("layer",)),
        quantization=table(q[QUANT_SHOWN]),
        window=table(w[WINDOW_SHOWN]),
        images=[(f, png(folder / f"{f}.png")) for f in ("headroom", "quantization")],
    )


def pair_section(dirs: dict[str, Path | None], model: str, corpus: str) -> dict:
    """What report.html.j2 shows of one model on one corpus (dirs: each stage's keyed folder,
    results/<model>/<corpus>/<stage>/<config id>, None where the sweep has no such job, with the
    stage's settings.yaml beside its outputs); `layer_stats` and `attention` (its summary.json, or
    None) feed the sweep's summary and curves."""
    from pipeline.stages import STAGES

    det, figs, cap, attention = dirs["detect"], dirs["figures"], dirs["capture"], dirs.get("attention")
    layer_stats = read_table(cap / "layer_stats.parquet")
    prompt = read_table(cap / "prompt.parquet")
    result = json.loads((det / "summary.json").read_text())
    return {
        "model": model,
        "corpus": corpus,
        "id": slug("p", model, corpus),
        "result": result,
        "protocol": {k: result.get(k) for k in ("protocol", "requested", "bos_token", "warning")}
        if result.get("protocol")
        else None,
        "summary_html": table(read_table(det / "summary.parquet"), none_found=True),
        "per_layer_html": table(read_table(det / "per_layer.parquet"), none_found=True),
        "interactive": [
            (
                "layerwise",
                figure(
                    interactive.layerwise(
                        {(model, corpus): layer_stats},
                        stats=tuple(interactive.STATS),
                        title=f"Layerwise |a|: {model} on {corpus}",
                    ),
                    slug("fig", model, corpus, "layerwise"),
                ),
            ),
            (
                "token_map",
                figure(
                    interactive.token_map(prompt, f"Token by layer: max |a| over dims, {model}"),
                    slug("fig", model, corpus, "token_map"),
                ),
            ),
        ],
        "figures": [(f, png(figs / f"{f}.png")) for f in FIGURES],
        "static": [(f, png(figs / f"{f}.png")) for f in STATIC],
        "layer_stats": layer_stats,
        "attention": json.loads((attention / "summary.json").read_text()) if attention else None,
        # each stage's own section (its declaration names the function), "" where the sweep has no such job
        **{
            f"{name}_html": globals()[s.section](dirs[name], model, corpus) if dirs.get(name) else Markup("")
            for name, s in STAGES.items()
            if s.section
        },
        "settings": {
            stage: (d / paths.MANIFEST).read_text() if (d / paths.MANIFEST).is_file() else None
            for stage, d in dirs.items()
            if d is not None
        },
    }


# ---------------------------------------------------------------- the sweep's summary
def interval_columns(df: pd.DataFrame) -> tuple[str, str] | None:
    """The columns of an interval of the perplexity ratio in an ablation table, if it has one:
    a pair `<x>_low`/`<x>_high` (or _lo/_hi, _lower/_upper) whose `<x>` names a ratio or a ci, or
    plain low/high (lower/upper)."""
    pairs = [
        (c, c[: -len(lo)] + hi)
        for lo, hi in (("_low", "_high"), ("_lo", "_hi"), ("_lower", "_upper"))
        for c in df.columns
        if c.endswith(lo) and c[: -len(lo)] + hi in df.columns
    ]
    pairs = [p for p in pairs if "ratio" in p[0] or "ci" in p[0]]
    pairs += [(lo, hi) for lo, hi in (("low", "high"), ("lower", "upper")) if lo in df.columns and hi in df.columns]
    return sorted(pairs, key=lambda p: "ratio" not in p[0])[0] if pairs else None


def ablation_verdicts(ablation: pd.DataFrame | None, model: str, corpus: str) -> str | None:
    """'emerge: harmful (zero ×30,800 [lo, hi])' for each `layers` the ablation ran (the verdict of
    its zero run, where the table has one per row), or None."""
    if ablation is None or "verdict" not in ablation:
        return None
    rows = ablation[(ablation["model"] == model) & (ablation["corpus"] == corpus)]
    ci, out = interval_columns(ablation), []
    for layers, g in rows.groupby("layers", sort=False):
        zero = g[g["intervention"] == "zero"]
        text = f"{layers}: {(zero if len(zero) else g)['verdict'].iloc[0]}"
        if len(zero) and "ratio" in zero:
            z = zero.iloc[0]
            band = f" [{columns.sig3(z[ci[0]])}, {columns.sig3(z[ci[1]])}]" if ci and pd.notna(z[ci[0]]) else ""
            text += f" (zero ×{columns.sig3(z['ratio'])}{band})"
        out.append(text)
    return "; ".join(out) or None


def summary(sections: list[dict], ablation: pd.DataFrame | None = None) -> pd.DataFrame:
    """The sweep at a glance, one row per (model, corpus) section: found or not, dims, token roles,
    the emerge block, the largest mean |a| and its ratio to the median, the ablation verdict (with the
    perplexity ratio of `zero` and its interval where the ablation table has one) and the Sink_1 share.

        >>> s = {"model": "m", "corpus": "c", "attention": None,
        ...      "result": {"found": False, "dims": [], "roles": [], "emerge_layer": None}}
        >>> summary([s]).iloc[0][["model", "found", "dims"]].tolist()
        ['m', 'none found', '']
    """
    rows = []
    for s in sections:
        r = s["result"]
        found = bool(r["found"])
        rows.append(
            {
                "model": s["model"],
                "corpus": s["corpus"],
                "found": "yes" if found else "none found",
                "dims": ", ".join(map(str, r["dims"])) if found else "",
                "roles": ", ".join(r["roles"]) if found else "",
                "emerge_layer": r["emerge_layer"] if found else None,
                "largest_mean_value": abs(r["largest_mean_value"]) if found else None,
                "largest_ratio": r["largest_ratio"] if found else None,
                "ablation": ablation_verdicts(ablation, s["model"], s["corpus"]),
                "sink_1_share": (s.get("attention") or {}).get("sink_1_share"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "corpus",
            "found",
            "dims",
            "roles",
            "emerge_layer",
            "largest_mean_value",
            "largest_ratio",
            "ablation",
            "sink_1_share",
        ],
    )


def summary_table(sections: list[dict], ablation: pd.DataFrame | None = None) -> Markup:
    """The summary as HTML, each model and corpus a link to its tab, each `layers` value of the ablation on its own line."""
    t = summary(sections, ablation)
    for col in ("model", "corpus"):
        t[col] = pd.Series([Markup('<a href="#{}">{}</a>').format(s["id"], s[col]) for s in sections], dtype=object)
    t["ablation"] = pd.Series(
        [Markup("<br>").join(v.split("; ")) if isinstance(v, str) else v for v in t["ablation"]], dtype=object
    )
    return table(t)


def _zero_effect(ablation: pd.DataFrame | None, model: str, corpus: str) -> str:
    """', and zeroing them at block 11 multiplies perplexity by ×24,964 [17,067, 37,464] (harmful; their mean: ×1.00
    [0.996, 1.01])' from the ablation's first `layers` value, or ''."""
    if ablation is None or "intervention" not in ablation:
        return ""
    rows = ablation[(ablation["model"] == model) & (ablation["corpus"] == corpus)]
    if rows.empty:
        return ""
    first = rows[rows["layers"] == rows["layers"].iloc[0]].set_index("intervention")
    ci = interval_columns(ablation)

    def ratio(name: str) -> str:
        r = first.loc[name]
        band = f" [{columns.sig3(r[ci[0]])}, {columns.sig3(r[ci[1]])}]" if ci and pd.notna(r[ci[0]]) else ""
        return f"×{columns.sig3(r['ratio'])}{band}"

    if "zero" not in first.index or "ratio" not in first:
        return ""
    blocks = str(first.loc["zero"].get("blocks", "") or first["layers"].iloc[0])
    where = f"block {blocks}" if "," not in blocks and "-" not in blocks else f"blocks {blocks}"
    verdict = first.loc["zero"].get("verdict", "")
    mean = f"; their mean: {ratio('mean')}" if "mean" in first.index else ""
    return f"; zeroing them at {where} multiplies perplexity by {ratio('zero')} ({verdict}{mean})"


def headline(sections: list[dict], ablation: pd.DataFrame | None = None, min_ratio: float = MIN_RATIO) -> list[str]:
    """One sentence per model (its own run, first corpus): what was found, where, how big, and what zeroing
    does, with its 95% interval; other corpora that agree are named, those that differ are said to.

        >>> s = {"model": "m", "corpus": "c", "result": {"found": True, "dims": [507], "roles": ["first"], "emerge_layer": 11,
        ...      "largest_mean_value": -24523.3, "largest_ratio": 13499.0}}
        >>> headline([s])
        ['m: massive activations in dim 507 at the first token, from block 11 on c: |a| 24,523.3 = ×13,500 the median |a|.']
    """
    from pipeline.paths import base_model

    out, models = [], {}
    for s in sections:
        models.setdefault(base_model(s["model"]), []).append(s)
    for model, runs in models.items():
        own = [s for s in runs if s["model"] == model] or runs
        first, r = own[0], own[0]["result"]
        others = [s["corpus"] for s in own[1:]]
        if not r["found"]:
            top = None
            if "layer_stats" in first:
                ls = first["layer_stats"]
                top = float((ls["top1_abs"] / ls["median_abs"]).groupby(ls["layer"]).mean().max())
            largest = (
                f" (largest top-1 |a|: ×{columns.sig3(top)} the median, below ×{columns.sig3(min_ratio)})"
                if top
                else ""
            )
            where = ", ".join([first["corpus"], *others])
            out.append(f"{model}: no massive activation on {where}{largest}.")
            continue
        dims = ", ".join(map(str, r["dims"]))
        roles = " and ".join(r["roles"])
        same = [s["corpus"] for s in own[1:] if s["result"]["found"] and s["result"]["dims"] == r["dims"]]
        differ = [c for c in others if c not in same]
        also = (f" (the same on {', '.join(same)})" if same else "") + (
            f" (other dims on {', '.join(differ)})" if differ else ""
        )
        out.append(
            f"{model}: massive activations in dim{'s' if len(r['dims']) > 1 else ''} {dims} at the {roles} token"
            f"{'s' if len(r['roles']) > 1 else ''}, from block {r['emerge_layer']} on {first['corpus']}{also}: "
            f"|a| {columns.magnitude(abs(r['largest_mean_value']))} = ×{columns.sig3(r['largest_ratio'])} the median |a|"
            f"{_zero_effect(ablation, first['model'], first['corpus'])}."
        )
    return out


def vision_section(paths: list[Path]) -> Markup:
    """Rule ablate_images: every images.parquet of the sweep's vision part, with the paper's numbers."""
    t = pd.concat([read_table(p) for p in paths], ignore_index=True)
    return render(
        "vision.html.j2",
        table=table(t[VISION_COLUMNS], main=VISION_MAIN, ids=("model", "corpus", "intervention")),
        reference=table(reference("vision_top1"), float_format=None),
    )


ABLATION_SHOWN = [
    "model",
    "corpus",
    "layers",
    "blocks",
    "intervention",
    "entries_changed",
    "perplexity",
    "ppl_interval",
    "ratio",
    "ratio_interval",
    "effect",
    "verdict",
]
ABLATION_MAIN = ["layers", "intervention", "perplexity", "ratio", "ratio_interval", "effect", "verdict"]


def interval(lo: float, hi: float, fmt=columns.sig3) -> str:
    """A 95% interval as the report writes it, each bound in its kind's format (a ratio by default):
    [1.02, 1.07], [17,100, 37,500]."""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def ablation_section(
    ablation: pd.DataFrame,
    zeroshot: list[pd.DataFrame] = (),
    readings: list = (),
    regrowth_images: dict[str, Path] | None = None,
    factors: tuple[float, float, float] = (2.0, 1.1, 0.5),
    forest: Path | None = None,
) -> str:
    """The ablation rule's HTML: per model and corpus a reading of the evidence (massive.intervene.ablation.readings),
    each model's regrowth figure, the perplexities with their 95% intervals and verdicts, the paper's
    numbers, zero-shot accuracy. factors: harmful, harmless, regrow share.

        >>> ablation_section(read_table("results/ablation_default.parquet"))  # doctest: +SKIP
    """
    shown = ablation.assign(
        ppl_interval=[interval(lo, hi, columns.perplexity) for lo, hi in zip(ablation["ppl_lo"], ablation["ppl_hi"])],
        ratio_interval=[interval(lo, hi) for lo, hi in zip(ablation["ratio_lo"], ablation["ratio_hi"])],
    )
    fmt = lambda v: f"{v:,.2f}"  # noqa: E731
    runs = [
        {
            "model": m,
            "corpus": c,
            "table": table(
                g[ABLATION_SHOWN].drop(columns=["model", "corpus"]),
                float_format=fmt,
                main=ABLATION_MAIN,
                ids=("layers", "intervention"),
            ),
        }
        for (m, c), g in shown.groupby(["model", "corpus"], sort=False)
    ]
    zs = None
    if len(zeroshot):
        z = pd.concat(zeroshot, ignore_index=True)
        z = z[z["metric"].isin(["acc", "acc_norm"])]
        zs = z.pivot_table(
            index=["model", "layers", "task", "metric"], columns="intervention", values="value"
        ).reset_index()
        zs.columns.name = None
        zs = table(zs, float_format=lambda v: f"{v:.3f}")
    harmful, harmless, share = factors
    return str(
        render(
            "ablation.html.j2",
            runs=runs,
            readings=readings,
            regrowth=[(m, png(p)) for m, p in (regrowth_images or {}).items()],
            harmful=harmful,
            harmless=harmless,
            forest=[("ablation", png(forest))] if forest is not None else [],
            share=share,
            reference=table(reference("perplexity"), float_format=columns.perplexity),
            zeroshot=zs,
        )
    )


def ablation_files(results: str | Path, sweep_name: str) -> dict[str, Path]:
    """The ablation rule's outputs: results/ablation_<sweep>.{parquet,png,html}."""
    return {ext: Path(paths.ablation_file(Path(sweep_name).stem, ext, str(results))) for ext in paths.ABLATION_EXTS}


def ablation_block(files: dict[str, Path]) -> Markup:
    """The report's ablation part: the rule's HTML file, and its figure where the section does not hold it
    (files: `ablation_files(...)`)."""
    section = files["html"].read_text()
    return render(
        "ablation_block.html.j2",
        section=Markup(section),
        image=None if 'alt="ablation"' in section else png(files["png"]),
    )


TRAIN_MAIN = [
    "variant",
    "step",
    "val_loss",
    "start_over_median",
    "start_layer",
    "start_attn",
    "slot_attn",
    "sink1",
    "start_contrast",
    "matched_step",
    "matched_contrast",
]  # the finding; the other columns behind a toggle
SCALE_MAIN = [
    "run",
    "variant",
    "n_layer",
    "n_embd",
    "val_loss",
    "start_over_median",
    "start_over_median_sqrt_d",
    "start_attn",
    "slot_attn",
]


def training_section(folder: Path, name: str) -> Markup:
    """Rule train_compare's comparison table and figures (folder: results/train/<name>), and in words
    each variant's contrast to default, at the final step and at matched loss."""
    comparison = read_table(folder / "comparison.parquet")
    rows = comparison.to_dict("records")
    default = next((r for r in rows if r["variant"] == "default"), None)
    contrasts = [r for r in rows if default is not None and r["variant"] != "default" and "matched_contrast" in r]
    return render(
        "training.html.j2",
        name=name,
        comparison=table(comparison, none_found=True, main=TRAIN_MAIN, ids=("variant",)),
        default=default,
        contrasts=contrasts,
        images=[(f, png(folder / f"{f}.png")) for f in ("emergence", "layerwise")],
    )


def training_scale_section(config: str, results: Path) -> Markup:
    """Rule train_scale's table and figure for one training config (results/train/<config>_scale)."""
    return render(
        "training_scale.html.j2",
        name=config,
        comparison=table(
            read_table(Path(paths.train_scale_file(config, "scale.parquet", str(results)))),
            none_found=True,
            main=SCALE_MAIN,
            ids=("run", "variant"),
        ),
        images=[("scale", png(Path(paths.train_scale_file(config, "scale.png", str(results)))))],
    )


def heading(block: Markup, default: str) -> Markup:
    """The text of a section's first <h2> (for the contents), or `default`."""
    m = re.search(r"<h2[^>]*>(.*?)</h2>", str(block), re.S)
    return Markup(re.sub(r"<[^>]+>", "", m.group(1)).strip()) if m else Markup.escape(default)


def report(
    sweep: str,
    sections: list[dict],
    extra_sections: list[Markup],
    min_abs: float,
    min_ratio: float,
    provenance: dict,
    ablation: pd.DataFrame | None = None,
) -> str:
    """The whole self-contained page: contents, the sweep's summary and layerwise curves, one section
    per model (a tab per corpus), then the sweep-level sections (`extra_sections`, each titled by its <h2>)."""
    from pipeline.paths import base_model, protocol_of

    models: dict[str, list[dict]] = {}
    for s in sections:  # a protocol run (gpt2@bos) is a tab of its model
        s.setdefault("tab", s["corpus"] + (f" @{protocol_of(s['model'])}" if protocol_of(s["model"]) else ""))
        models.setdefault(base_model(s["model"]), []).append(s)
    drawn = sorted((s for s in sections if "layer_stats" in s), key=lambda s: protocol_of(s["model"]) is None)
    curves = interactive.layerwise(
        {(s["model"], s["corpus"]): s["layer_stats"] for s in drawn}
    )  # protocol runs first: under their model
    extras = [
        {"id": slug("s", i), "title": heading(b, f"section {i + 1}"), "html": b} for i, b in enumerate(extra_sections)
    ]
    return ENV.get_template("report.html.j2").render(
        sweep=sweep,
        sections=sections,
        models=models,
        extra_sections=extra_sections,
        extras=extras,
        headline=headline(sections, ablation, min_ratio),
        summary=summary_table(sections, ablation),
        curves=figure(curves, "fig-sweep-layerwise") if curves.data else None,
        plotly_js=plotly_js(),
        min_abs=min_abs,
        min_ratio=min_ratio,
        provenance=provenance,
    )


# ---------------------------------------------------------------- protocols, outlier features
PROTOCOL_COLUMNS = [
    "model",
    "run",
    "corpus",
    "protocol",
    "model_bos",
    "tokenizer_adds_bos",
    "n_chunks",
    "perplexity",
    "zeroed",
    "massive_dims",
    "roles",
    "largest_ratio",
    "saturated",
    "sink_1_share",
    "mass_first_mean",
]
PROTOCOL_MAIN = [
    "run",
    "corpus",
    "protocol",
    "perplexity",
    "zeroed",
    "massive_dims",
    "roles",
    "largest_ratio",
    "sink_1_share",
    "mass_first_mean",
]
OUTLIER_SHOWN = [
    "dim",
    "criterion",
    "n_layers",
    "layer_share",
    "first_layer",
    "last_layer",
    "token_share",
    "max_token_share",
    "massive_token_share",
    "dense_layers",
    "max_abs",
    "also_massive",
]


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_row(where, run: str, corpus: str, layers: list[str]) -> dict:
    from pipeline.paths import base_model

    det_dir, att_dir = where("detect", run, corpus), where("attention", run, corpus)
    det = (_json(det_dir / "summary.json") if det_dir else None) or {}
    att = (_json(att_dir / "summary.json") if att_dir else None) or {}
    ppl = {}
    for lay in layers:
        d = where("ablate", run, corpus, lay)
        f = d / "perplexity.parquet" if d else None
        if f is not None and f.is_file():
            t = read_table(f).set_index("intervention")
            ppl = {k: float(v) for k, v in t["perplexity"].items()}
            ppl["chunks"] = int(t["n_chunks"].iloc[0])
            break
    sat = det.get("saturated")
    return {
        "model": base_model(run),
        "run": run,
        "corpus": corpus,
        "protocol": det.get("protocol") or "-",
        "model_bos": det.get("requested") or "-",
        "tokenizer_adds_bos": "-"
        if det.get("protocol") is None
        else ("yes" if det.get("tokenizer_adds_bos") else "no"),
        "n_chunks": ppl.get("chunks"),
        "perplexity": ppl.get("none"),
        "zeroed": ppl.get("zero"),
        "massive_dims": ", ".join(map(str, det.get("dims", []))) or ("none found" if det else "-"),
        "roles": ", ".join(det.get("roles", [])),
        "largest_ratio": det.get("largest_ratio"),
        "saturated": f"saturated: up to {sat['max_count']:,} pass (top-k {sat['k']})" if sat else "",
        "sink_1_share": att.get("sink_1_share"),
        "mass_first_mean": att.get("mass_first_mean"),
        "_warning": det.get("warning"),
        "_outlier_dims": det.get("outlier_dims", []),
        "_shared": det.get("shared_dims", []),
    }


def protocols_section(
    where, sweep: dict, min_abs: float, min_ratio: float, detect: dict | None = None
) -> tuple[Markup, Markup]:
    """The report's two sections on how every run's sequences began and on outlier features: one row
    per (model or run, corpus) of the sweep's language models (protocol, model.bos, whether the
    tokenizer adds a BOS, perplexity, massive dims and roles, saturation, Sink_1 share), a
    visible warning where the tokenizer adds a BOS but the run had none, the contrast of each
    model's protocols on the protocols' corpora, and per run its outlier feature dims beside its
    massive ones (`detect`: the config's detect section, for the thresholds named). `where(rule,
    run, corpus[, layers])` is a job's keyed folder (pipeline.jobs.Plan.where), None if none."""
    from pipeline import sweep as sweeps

    d = {
        k: getattr(detect, k)
        for k in ("outlier_abs", "outlier_ratio", "outlier_token_share", "outlier_layer_share", "massive_max_share")
        if detect is not None and hasattr(detect, k)
    }
    layers = (sweep.get("ablate") or {}).get("layers", ["emerge"])
    rows = [_run_row(where, m, c, layers) for m, c in sweeps.llm_pairs(sweep)]
    shown = pd.DataFrame(
        [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], columns=PROTOCOL_COLUMNS
    )
    for col in ("n_chunks", "perplexity", "zeroed", "largest_ratio", "sink_1_share", "mass_first_mean"):
        shown[col] = pd.to_numeric(shown[col], errors="coerce")  # None -> NaN: shown as '-'
    warnings = [{"run": r["run"], "corpus": r["corpus"], "text": r["_warning"]} for r in rows if r["_warning"]]
    contrasts = []
    p = sweep.get("protocols") or {"names": [], "corpora": []}
    for m in sweep["models"]:
        for c in p.get("corpora", []):
            runs = [m] + [run for run, cc in sweeps.protocol_pairs(sweep) if cc == c and run.split("@")[0] == m]
            if len(runs) > 1:
                contrasts.append(
                    {
                        "model": m,
                        "corpus": c,
                        "runs": runs,
                        "table": table(
                            shown[shown["run"].isin(runs) & (shown["corpus"] == c)].drop(columns=["model", "corpus"]),
                            main=PROTOCOL_MAIN,
                            ids=("run",),
                        ),
                    }
                )
    summary, details = [], []
    for r in rows:
        det = where("detect", r["run"], r["corpus"])
        o = (
            read_table(det / "outliers.parquet")
            if det and (det / "outliers.parquet").is_file()
            else pd.DataFrame(columns=OUTLIER_SHOWN)
        )
        summary.append(
            {
                "run": r["run"],
                "corpus": r["corpus"],
                "protocol": r["protocol"],
                "massive_dims": r["massive_dims"],
                "roles": r["roles"],
                "n_outlier_dims": len(o),
                "dense_dims": ", ".join(str(x) for x in o.loc[o["dense_layers"] != "", "dim"]) if len(o) else "",
                "max_token_share": float(o["max_token_share"].max()) if len(o) else None,
                "shared_dims": ", ".join(map(str, r["_shared"])),
            }
        )
        if len(o):
            details.append(
                {
                    "run": r["run"],
                    "corpus": r["corpus"],
                    "n": len(o),
                    "table": table(o[OUTLIER_SHOWN].sort_values("max_token_share", ascending=False).head(50)),
                }
            )
    summary = pd.DataFrame(summary)
    summary["max_token_share"] = pd.to_numeric(summary["max_token_share"], errors="coerce")
    by_model = [
        {"model": m, "table": table(g.drop(columns="model"), main=PROTOCOL_MAIN, ids=("run", "corpus"))}
        for m, g in shown.groupby("model", sort=False)
    ]  # each model's runs under it
    return (
        render("protocols.html.j2", warnings=warnings, models=by_model, contrasts=contrasts),
        render(
            "outliers.html.j2",
            outliers=table(summary),
            outlier_tables=details,
            min_abs=min_abs,
            min_ratio=min_ratio,
            outlier_abs=d.get("outlier_abs", 6.0),
            outlier_ratio=d.get("outlier_ratio", 9.0),
            token_share=d.get("outlier_token_share", 0.06),
            layer_share=d.get("outlier_layer_share", 0.25),
            max_share=d.get("massive_max_share", 0.5),
        ),
    )
