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
  protocols_section every run's sequence protocol, the contrast between protocols per model, and
                    massive activations vs outlier features (detect/, attention/, ablate/ of each run)
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
    result = json.loads((det / "summary.json").read_text())
    return {
        "model": model,
        "corpus": corpus,
        "result": result,
        "protocol": {k: result.get(k) for k in ("protocol", "requested", "bos_token", "warning")} if result.get("protocol") else None,
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


def ablation_section(ablation: pd.DataFrame, zeroshot: list[pd.DataFrame] = ()) -> str:
    """The ablation rule's HTML: perplexity per intervention and verdict, the paper's numbers, zero-shot accuracy.

        >>> ablation_section(read_table("results/ablation_default.parquet"))  # doctest: +SKIP
    """
    order = list(dict.fromkeys(ablation["intervention"]))
    pivot = ablation.pivot_table(index=["model", "corpus", "layers", "blocks", "dims", "verdict"], columns="intervention",
                                 values="perplexity")[order].reset_index()
    pivot.columns.name = None
    fmt = lambda v: f"{v:,.2f}"  # noqa: E731
    zs = None
    if len(zeroshot):
        z = pd.concat(zeroshot, ignore_index=True)
        z = z[z["metric"].isin(["acc", "acc_norm"])]
        zs = z.pivot_table(index=["model", "layers", "task", "metric"], columns="intervention", values="value").reset_index()
        zs.columns.name = None
        zs = table(zs, float_format=lambda v: f"{v:.3f}")
    return str(render("ablation.html.j2", perplexity=table(pivot, float_format=fmt),
                      reference=table(reference("perplexity"), float_format=fmt), zeroshot=zs))


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


# ---------------------------------------------------------------- protocols, outlier features
PROTOCOL_COLUMNS = ["model", "run", "corpus", "protocol", "model.bos", "tokenizer adds BOS", "chunks", "perplexity", "zeroed",
                    "massive dims", "roles", "largest x median", "saturated", "Sink_1 share", "mass on first token"]
OUTLIER_SHOWN = ["dim", "criterion", "n_layers", "layer_share", "first_layer", "last_layer", "token_share", "max_token_share",
                 "massive_token_share", "dense_layers", "max_abs", "also_massive"]


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_row(results: Path, run: str, corpus: str, layers: list[str]) -> dict:
    from pipeline.paths import base_model, pair_dir

    folder = Path(pair_dir(run, corpus, str(results)))
    det = _json(folder / "detect" / "summary.json") or {}
    att = _json(folder / "attention" / "summary.json") or {}
    ppl = {}
    for lay in layers:
        f = folder / "ablate" / lay / "perplexity.parquet"
        if f.is_file():
            t = read_table(f).set_index("intervention")
            ppl = {k: float(v) for k, v in t["perplexity"].items()}
            ppl["chunks"] = int(t["n_chunks"].iloc[0])
            break
    sat = det.get("saturated")
    return {"model": base_model(run), "run": run, "corpus": corpus, "protocol": det.get("protocol") or "-",
            "model.bos": det.get("requested") or "-",
            "tokenizer adds BOS": "-" if det.get("protocol") is None else ("yes" if det.get("tokenizer_adds_bos") else "no"),
            "chunks": ppl.get("chunks"), "perplexity": ppl.get("none"), "zeroed": ppl.get("zero"),
            "massive dims": ", ".join(map(str, det.get("dims", []))) or ("none found" if det else "-"),
            "roles": ", ".join(det.get("roles", [])), "largest x median": det.get("largest_ratio"),
            "saturated": f"saturated: up to {sat['max_count']:,} pass (top-k {sat['k']})" if sat else "",
            "Sink_1 share": att.get("sink_1_share"), "mass on first token": att.get("mass_first_mean"),
            "_warning": det.get("warning"), "_outlier_dims": det.get("outlier_dims", []), "_shared": det.get("shared_dims", [])}


def protocols_section(results: str | Path, sweep: dict, min_abs: float, min_ratio: float, detect: dict | None = None) -> Markup:
    """The report's sections on how every run's sequences began and on outlier features: one row
    per (model or run, corpus) of the sweep's language models (protocol, model.bos, whether the
    tokenizer adds a BOS, perplexity, massive dims and roles, saturation, Sink_1 share), a
    visible warning where the tokenizer adds a BOS but the run had none, the contrast of each
    model's protocols on the protocols' corpora, and per run its outlier feature dims beside its
    massive ones (`detect`: the config's detect section, for the thresholds named)."""
    from pipeline import sweep as sweeps

    results = Path(results)
    d = {k: getattr(detect, k) for k in ("outlier_abs", "outlier_ratio", "outlier_token_share", "outlier_layer_share",
                                         "massive_max_share")
         if detect is not None and hasattr(detect, k)}
    layers = (sweep.get("ablate") or {}).get("layers", ["emerge"])
    rows = [_run_row(results, m, c, layers) for m, c in sweeps.llm_pairs(sweep)]
    shown = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], columns=PROTOCOL_COLUMNS)
    for col in ("chunks", "perplexity", "zeroed", "largest x median", "Sink_1 share", "mass on first token"):
        shown[col] = pd.to_numeric(shown[col], errors="coerce")  # None -> NaN: shown as '-'
    warnings = [{"run": r["run"], "corpus": r["corpus"], "text": r["_warning"]} for r in rows if r["_warning"]]
    contrasts = []
    p = sweep.get("protocols") or {"names": [], "corpora": []}
    for m in sweep["models"]:
        for c in p.get("corpora", []):
            runs = [m] + [run for run, cc in sweeps.protocol_pairs(sweep) if cc == c and run.split("@")[0] == m]
            if len(runs) > 1:
                contrasts.append({"model": m, "corpus": c, "runs": runs,
                                  "table": table(shown[shown["run"].isin(runs) & (shown["corpus"] == c)].drop(columns=["model", "corpus"]))})
    summary, details = [], []
    for r in rows:
        f = results / r["run"] / r["corpus"] / "detect" / "outliers.parquet"
        o = read_table(f) if f.is_file() else pd.DataFrame(columns=OUTLIER_SHOWN)
        summary.append({"run": r["run"], "corpus": r["corpus"], "protocol": r["protocol"], "massive dims": r["massive dims"],
                        "roles": r["roles"], "outlier feature dims": len(o),
                        "dense (massive at most tokens)": ", ".join(str(x) for x in o.loc[o["dense_layers"] != "", "dim"]) if len(o) else "",
                        "largest token share": float(o["max_token_share"].max()) if len(o) else None,
                        "shared dims": ", ".join(map(str, r["_shared"]))})
        if len(o):
            details.append({"run": r["run"], "corpus": r["corpus"], "n": len(o),
                            "table": table(o[OUTLIER_SHOWN].sort_values("max_token_share", ascending=False).head(50),
                                           float_format=lambda v: f"{v:.3g}")})
    summary = pd.DataFrame(summary)
    summary["largest token share"] = pd.to_numeric(summary["largest token share"], errors="coerce")
    return render("protocols.html.j2", warnings=warnings, table=table(shown), contrasts=contrasts,
                  outliers=table(summary, float_format=lambda v: f"{v:.3g}"), outlier_tables=details,
                  min_abs=min_abs, min_ratio=min_ratio, outlier_abs=d.get("outlier_abs", 6.0), outlier_ratio=d.get("outlier_ratio", 9.0),
                  token_share=d.get("outlier_token_share", 0.06), layer_share=d.get("outlier_layer_share", 0.25),
                  max_share=d.get("massive_max_share", 0.5))
