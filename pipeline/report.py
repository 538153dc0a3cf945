"""Rule report: one self-contained HTML page for a sweep.

A headline (one sentence per model: what was found, where, how big, what zeroing does with its
interval), the sweep's summary (one row per model and corpus: found, dims, roles, emerge block,
largest ratio, ablation verdict, Sink_1 share), the contents and the layerwise curves of every model;
then one section per model, a tab per corpus (and per protocol run of the model, and vision model
x image data): the verdict, the
detection table, the per-layer statistics (with where the massive activations are: dims and
tokens, e.g. which registers), the interactive layerwise curves and token map and the figures
(embedded as PNG), with the attention section and "Where they come from" (rule origins) where the
sweep has them, and "What they cost at inference" (rule inference); then the sweep-level sections: vision interventions, ablation, retraining.
Every piece of HTML comes from the templates in pipeline/templates/ (pipeline/html.py).
Output: results/report_<sweep>.html.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup
from omegaconf import DictConfig

from pipeline import checkpoints, cli, jobs, paths, stages, tracking
from pipeline import sweep as sweeps
from pipeline.io import atomic_path, provenance, read_table, results_dir

PAIR_STAGES = (
    stages.tab_stages()
)  # a pair's tab: the stages keyed by model and corpus (pipeline/stages.py declares each)


def report_path(cfg: DictConfig) -> Path:
    return Path(paths.report_file(Path(cfg.sweep_name).stem, results_dir(cfg)))


def extra_sections(results: str, sweep: dict, sweep_name: str, detect=None, where=None) -> list[Markup]:
    """The sections of the sweep-level rules: protocols and outlier features, ablate_images,
    ablation, train_compare (`detect`: the config's detect section, its thresholds)."""
    from pipeline import html
    from pipeline.config import DetectConfig

    detect = detect if detect is not None else DetectConfig()
    where = where or jobs.Plan(sweep, sweep_name).where(results)
    blocks = []
    if sweep["models"]:  # how every run's sequences began, the protocols' contrast, outlier features
        blocks.extend(html.protocols_section(where, sweep, detect.min_abs, detect.min_ratio, detect))
    if sweep.get("revisions"):  # training checkpoints: the emergence against the step (pipeline/checkpoints.py)
        blocks.append(checkpoints.section(where, sweep))
    if sweep.get("vision"):
        v = sweep["vision"]
        blocks.append(
            html.vision_section(
                [
                    where("ablate_images", m, i, layers) / "images.parquet"
                    for m in v["models"]
                    for i in v["images"]
                    for layers in v["layers"]
                ]
            )
        )
    if sweep.get("ablate"):
        blocks.append(html.ablation_block(html.ablation_files(results, sweep_name)))
    train = sweep.get("train") or {}
    if train.get("scale"):  # a grid: one comparison across it per config (its runs' own tables are on disk)
        blocks.extend(html.training_scale_section(config, results) for config in train.get("configs", []))
    else:
        for name, _, _ in sweeps.train_runs(sweep):
            blocks.append(html.training_section(Path(paths.train_dir(name, results)), name))
    if sweep.get("retrofit") is not None:  # beside the from-scratch runs: the same question on pretrained weights
        blocks.append(
            html.retrofit_overview(
                [(m, c, where("retrofit", m, c)) for m, c in sweeps.pairs(sweep) if where("retrofit", m, c) is not None]
            )
        )
    return blocks


def render(cfg: DictConfig) -> str:
    from pipeline import html

    sweep = sweeps.load(cfg.sweep_name)
    results = results_dir(cfg)
    plan = jobs.Plan(sweep, cfg.sweep_name)
    plan.ids(root=cfg.paths.root)  # the config ids of the sweep's jobs: the folders of exactly its outputs
    where = plan.where(results)
    sections = [html.pair_section({s: where(s, m, c) for s in PAIR_STAGES}, m, c) for m, c in sweeps.pairs(sweep)]
    ablation = read_table(html.ablation_files(results, cfg.sweep_name)["parquet"]) if sweep.get("ablate") else None
    return html.report(
        Path(cfg.sweep_name).stem,
        sections,
        extra_sections(results, sweep, cfg.sweep_name, cfg.detect, where),
        min_abs=cfg.detect.min_abs,
        min_ratio=cfg.detect.min_ratio,
        provenance=provenance(cfg),
        ablation=ablation,
    )


def run(cfg: DictConfig) -> None:
    out = report_path(cfg)
    text = render(cfg)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    with tracking.stage_run(cfg, name=f"report/{Path(cfg.sweep_name).stem}") as wb:
        wb.log({"report": tracking.wandb_html(out)})


if __name__ == "__main__":
    cli.main("report", run)
