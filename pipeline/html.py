"""The report's HTML, every piece of it from the Jinja templates in pipeline/templates/ (not a rule).

One Jinja environment with autoescape on; tables come from `DataFrame.to_html` (which escapes
the cells) and go into the templates marked safe. Each section function reads the outputs of
one rule and returns its HTML:

  pair_section      detect/ and figures/ of one model on one corpus (+ its attention section)
  attention_section attention/summary.json, perplexity.parquet, heatmaps.png, sink_curve.png
  origins_section   origins/sublayers.parquet, superweights.parquet, perplexity.parquet, contributions.png
  vision_section    every images.parquet of the sweep's vision part, beside the paper's numbers
  ablation_section  the ablation rule's results/ablation_<sweep>.html (its table, the paper's, zero-shot)
  ablation_block    that file and its figure, for the report
  training_section  results/train/<name>/comparison.parquet, emergence.png, layerwise.png
  report            the whole page (report.html.j2)

    >>> from pipeline import html
    >>> html.table(pd.DataFrame({"layer": [0], "top1_abs": [1234.5]}))[:6]
    Markup('<table')

Also here, for every rule that writes a figure: `save_figure(fig, path, dpi)`, atomically.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jinja2
import pandas as pd
import yaml
from markupsafe import Markup

from pipeline import paths
from pipeline.cli import CONF_DIR
from pipeline.io import atomic_path, read_table

TEMPLATES = Path(__file__).parent / "templates"
FIGURES = ["layerwise", "prompt_3d", "roles", "token_map"]  # rule figures' PNGs, in the report's order
VISION_COLUMNS = ["model", "corpus", "intervention", "layers", "blocks", "dims", "n_images", "cls_cosine", "cls_cosine_min",
                  "cls_rel_change", "top1", "zeroshot_top1", "entries_changed", "note"]


def save_figure(fig, path: str | Path, dpi: int, tight: bool = True) -> Path:
    """Write a matplotlib figure as PNG, atomically (a failure leaves no file behind).

        >>> save_figure(plots.layerwise(layer_stats, "m on c"), out / "layerwise.png", cfg.figures.dpi)  # doctest: +SKIP
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **({"bbox_inches": "tight"} if tight else {}))
    return Path(path)


# ---------------------------------------------------------------- the environment and its filters
def number(v: float) -> str:
    """The report's number format: 1,234.5 from 10 up, three significant digits below."""
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def value(v) -> str:
    """A summary value: '-' for none, 3 decimals for a float, else as it is."""
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
ENV.filters.update(value=value, fmt=format)


def render(template: str, **context) -> Markup:
    """One template of pipeline/templates/ rendered, as safe HTML."""
    return Markup(ENV.get_template(template).render(**context).strip())


def table(df: pd.DataFrame, float_format=number, none_found: bool = False) -> Markup:
    """A DataFrame as an HTML table (cells escaped), '-' for missing values; 'none found' when empty if asked."""
    if none_found and df.empty:
        return Markup("<p><em>none found</em></p>")
    return Markup(df.to_html(index=False, border=0, float_format=float_format, na_rep="-"))


def png(path: Path) -> str:
    """A PNG file as base64, to embed in the page."""
    return base64.b64encode(Path(path).read_bytes()).decode()


def reference(key: str) -> pd.DataFrame:
    """One table of the paper's numbers (conf/reference/paper.yaml), for comparison only.

        >>> reference("perplexity").columns.tolist()[:3]
        ['model', 'corpus', 'none']
    """
    return pd.DataFrame(yaml.safe_load((CONF_DIR / "reference" / "paper.yaml").read_text())[key])


# ---------------------------------------------------------------- sections
def attention_section(folder: Path, model: str, corpus: str) -> Markup:
    """Rule attention's numbers, perplexity table and both figures (folder: results/<model>/<corpus>/attention)."""
    res = json.loads((folder / "summary.json").read_text())
    ppl = read_table(folder / "perplexity.parquet")[["variant", "perplexity", "ratio_to_none"]]
    return render("attention.html.j2", model=model, corpus=corpus, res=res,
                  decomposition=res.get("decomposition_median_massive_in_input") or res.get("decomposition_median") or {},
                  perplexity=table(ppl, float_format=lambda v: f"{v:.4g}"),
                  images=[(f, png(folder / f"{f}.png")) for f in ("heatmaps", "sink_curve")])


SUBLAYER_SHOWN = ["dim", "role", "block", "part", "contribution", "value", "share", "n_tokens", "writes", "parallel"]
SUPERWEIGHT_SHOWN = ["dim", "role", "block", "expert", "n_tokens", "channel", "input_value", "input_ratio", "param",
                     "coordinate", "weight", "abs_rank", "share", "primary"]
ORIGINS_PERPLEXITY = ["intervention", "kind", "edited", "weights_changed", "entries_changed", "massive_abs", "perplexity",
                      "ratio_to_none"]


def origins_section(folder: Path, model: str, corpus: str) -> Markup:
    """Rule origins: the writing sublayers, the super weights, the perplexities and the figure
    (folder: results/<model>/<corpus>/origins), "Where they come from"."""
    sub, sw = read_table(folder / "sublayers.parquet"), read_table(folder / "superweights.parquet")
    ppl = read_table(folder / "perplexity.parquet")
    writers = []
    for _, w in sub[sub["writes"].astype(bool)].iterrows() if len(sub) else []:
        top = sw[(sw["dim"] == w["dim"]) & (sw["role"] == w["role"]) & sw["primary"].astype(bool)] if len(sw) else sw
        first = top.sort_values("n_tokens", ascending=False).iloc[0].to_dict() if len(top) else None
        if first is not None and pd.isna(first["expert"]):
            first["expert"] = None
        writers.append({**w.to_dict(), "superweight": first})
    return render("origins.html.j2", model=model, corpus=corpus, writers=writers,
                  sublayers=table(sub[SUBLAYER_SHOWN], none_found=True),
                  superweights=table(sw[SUPERWEIGHT_SHOWN], float_format=lambda v: f"{v:,.4g}" if abs(v) < 10 else number(v),
                                     none_found=True),
                  perplexity=table(ppl[ORIGINS_PERPLEXITY], float_format=lambda v: f"{v:,.2f}"),
                  images=[("contributions", png(folder / "contributions.png"))])


def pair_section(folder: Path, model: str, corpus: str, attention: bool = False, origins: bool = False) -> dict:
    """What report.html.j2 shows of one model on one corpus (folder: results/<model>/<corpus>)."""
    det, figs = folder / "detect", folder / "figures"
    return {
        "model": model,
        "corpus": corpus,
        "result": json.loads((det / "summary.json").read_text()),
        "summary_html": table(read_table(det / "summary.parquet"), none_found=True),
        "per_layer_html": table(read_table(det / "per_layer.parquet"), none_found=True),
        "figures": [(f, png(figs / f"{f}.png")) for f in FIGURES],
        "attention_html": attention_section(folder / "attention", model, corpus) if attention else Markup(""),
        "origins_html": origins_section(folder / "origins", model, corpus) if origins else Markup(""),
    }


def vision_section(paths: list[Path]) -> Markup:
    """Rule ablate_images: every images.parquet of the sweep's vision part, with the paper's numbers."""
    t = pd.concat([read_table(p) for p in paths], ignore_index=True)
    return render("vision.html.j2", table=table(t[VISION_COLUMNS], float_format=lambda x: f"{x:.4f}"),
                  reference=table(reference("vision_top1"), float_format=None))


ABLATION_SHOWN = ["model", "corpus", "layers", "blocks", "intervention", "entries_changed", "perplexity", "ppl_interval",
                  "ratio_to_none", "ratio_interval", "effect", "verdict"]


def interval(lo: float, hi: float) -> str:
    """A 95% interval as the report writes it: [1.02, 1.07]."""
    return f"[{lo:,.4g}, {hi:,.4g}]"


def ablation_section(ablation: pd.DataFrame, zeroshot: list[pd.DataFrame] = (), readings: list = (),
                     regrowth_images: dict[str, Path] | None = None, factors: tuple[float, float, float] = (2.0, 1.1, 0.5)) -> str:
    """The ablation rule's HTML: per model and corpus a reading of the evidence (massive.ablation.readings),
    each model's regrowth figure, the perplexities with their 95% intervals and verdicts, the paper's
    numbers, zero-shot accuracy. factors: harmful, harmless, regrow share.

        >>> ablation_section(read_table("results/ablation_default.parquet"))  # doctest: +SKIP
    """
    shown = ablation.assign(ppl_interval=[interval(lo, hi) for lo, hi in zip(ablation["ppl_lo"], ablation["ppl_hi"])],
                            ratio_interval=[interval(lo, hi) for lo, hi in zip(ablation["ratio_lo"], ablation["ratio_hi"])])
    fmt = lambda v: f"{v:,.2f}"  # noqa: E731
    zs = None
    if len(zeroshot):
        z = pd.concat(zeroshot, ignore_index=True)
        z = z[z["metric"].isin(["acc", "acc_norm"])]
        zs = z.pivot_table(index=["model", "layers", "task", "metric"], columns="intervention", values="value").reset_index()
        zs.columns.name = None
        zs = table(zs, float_format=lambda v: f"{v:.3f}")
    harmful, harmless, share = factors
    return str(render("ablation.html.j2", perplexity=table(shown[ABLATION_SHOWN], float_format=fmt), readings=readings,
                      regrowth=[(m, png(p)) for m, p in (regrowth_images or {}).items()], harmful=harmful, harmless=harmless,
                      share=share, reference=table(reference("perplexity"), float_format=fmt), zeroshot=zs))


def ablation_files(results: str | Path, sweep_name: str) -> dict[str, Path]:
    """The ablation rule's outputs: results/ablation_<sweep>.{parquet,png,html}."""
    return {ext: Path(paths.ablation_file(Path(sweep_name).stem, ext, str(results))) for ext in paths.ABLATION_EXTS}


def ablation_block(files: dict[str, Path]) -> Markup:
    """The report's ablation part: the rule's HTML file and its figure (files: `ablation_files(...)`)."""
    return render("ablation_block.html.j2", section=Markup(files["html"].read_text()), image=png(files["png"]))


def training_section(folder: Path, name: str) -> Markup:
    """Rule train_compare's comparison table and figures (folder: results/train/<name>)."""
    return render("training.html.j2", name=name, comparison=table(read_table(folder / "comparison.parquet"), none_found=True),
                  images=[(f, png(folder / f"{f}.png")) for f in ("emergence", "layerwise")])


def report(sweep: str, sections: list[dict], extra_sections: list[Markup], min_abs: float, min_ratio: float,
           provenance: dict) -> str:
    """The whole self-contained page: an overview, each model on each corpus, then the sweep-level sections."""
    return ENV.get_template("report.html.j2").render(sweep=sweep, sections=sections, extra_sections=extra_sections,
                                                     min_abs=min_abs, min_ratio=min_ratio, provenance=provenance)
