"""Rule report: one self-contained HTML page for a sweep.

For every model x corpus of the sweep (and vision model x image data): the verdict, the
detection table, the per-layer statistics (with where the massive activations are: dims and
tokens, e.g. which registers) and the figures (embedded as PNG); then the sweep-level sections. Output: results/report_<sweep>.html.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jinja2
import pandas as pd
from omegaconf import DictConfig

from pipeline import cli, sweep as sweeps, tracking
from pipeline.io import atomic_path, provenance, read_table, root

TEMPLATES = Path(__file__).parent / "templates"
FIGURES = ["layerwise", "prompt_3d", "roles", "token_map"]


def report_path(cfg: DictConfig) -> Path:
    return root(cfg) / cfg.paths.results / f"report_{Path(cfg.sweep_name).stem}.html"


def stage_dir(cfg: DictConfig, model: str, corpus: str, stage: str) -> Path:
    return root(cfg) / cfg.paths.results / model / corpus / stage


def number(v: float) -> str:
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none found</em></p>"
    return df.to_html(index=False, border=0, float_format=number, na_rep="-")


def section(cfg: DictConfig, model: str, corpus: str, sweep: dict) -> dict:
    det, figs = stage_dir(cfg, model, corpus, "detect"), stage_dir(cfg, model, corpus, "figures")
    attention = ""
    if sweep.get("attention") and model in sweep["models"] and corpus in sweep["corpora"]:
        from pipeline.attention import report_section

        attention = report_section(cfg, model, corpus)
    return {
        "attention_html": attention,
        "model": model,
        "corpus": corpus,
        "result": json.loads((det / "summary.json").read_text()),
        "summary_html": html_table(read_table(det / "summary.parquet")),
        "per_layer_html": html_table(read_table(det / "per_layer.parquet")),
        "figures": [(f, base64.b64encode((figs / f"{f}.png").read_bytes()).decode()) for f in FIGURES],
    }


def extra_sections(cfg: DictConfig, sweep: dict) -> list[str]:
    """Sections written by sweep-level rules (ablation, ...), with their figure."""
    blocks = []
    if sweep.get("vision"):
        from pipeline.ablate_images import report_section

        blocks.append(report_section(cfg, sweep))
    if sweep.get("ablate"):
        from pipeline.ablation import outputs

        out = outputs(cfg)
        img = base64.b64encode(out["png"].read_bytes()).decode()
        blocks.append(out["html"].read_text() + f'<div class="figs"><img alt="ablation" src="data:image/png;base64,{img}"></div>')
    for name in (sweep.get("train") or {}).get("configs", []):
        base = root(cfg) / cfg.paths.results / "train" / name
        imgs = "".join(f'<img alt="{f}" src="data:image/png;base64,{base64.b64encode((base / f"{f}.png").read_bytes()).decode()}">'
                       for f in ("emergence", "layerwise"))
        blocks.append(f"<h2>Retraining: {name}</h2><p>GPT variants trained from scratch (rules/train.smk, "
                      f"docs/retraining.md): the comparison at the final step, and the emergence of the largest "
                      f"activation and of attention sinks during training.</p>"
                      + html_table(read_table(base / "comparison.parquet")) + f'<div class="figs">{imgs}</div>')
    return blocks


def render(cfg: DictConfig) -> str:
    sweep = sweeps.load(cfg.sweep_name)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]))
    sections = [section(cfg, m, c, sweep) for m, c in sweeps.pairs(sweep)]
    for s in sections:
        s["attention_html"] = jinja2.filters.do_mark_safe(s["attention_html"])
        s["summary_html"] = jinja2.filters.do_mark_safe(s["summary_html"])
        s["per_layer_html"] = jinja2.filters.do_mark_safe(s["per_layer_html"])
    return env.get_template("report.html.j2").render(
        sweep=Path(cfg.sweep_name).stem, sections=sections, min_abs=cfg.detect.min_abs, min_ratio=cfg.detect.min_ratio,
        extra_sections=[jinja2.filters.do_mark_safe(x) for x in extra_sections(cfg, sweep)], provenance=provenance(cfg))


def run(cfg: DictConfig) -> None:
    html = render(cfg)
    out = report_path(cfg)
    with atomic_path(out) as tmp:
        tmp.write_text(html)
    with tracking.stage_run(cfg, name=f"report/{Path(cfg.sweep_name).stem}") as wb:
        wb.log({"report": tracking.wandb_html(out)})


if __name__ == "__main__":
    cli.main("report", run)
