"""Rule ablation: the sweep's ablation results in one table, one figure and a report section.

Reads every results/<model>/<corpus>/ablate/<layers>/perplexity.parquet of the sweep and writes
  results/ablation_<sweep>.parquet  all rows, plus the verdict per (model, corpus, layers):
                                    "harmful" when zeroing multiplies perplexity by more than
                                    ablate.harmful_factor, "harmless" otherwise, "none found"
                                    when detection found nothing to ablate
  results/ablation_<sweep>.png      perplexity per intervention, log axis
  results/ablation_<sweep>.html     the report section, with the paper's reference numbers
                                    (conf/reference/paper.yaml) beside ours
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline import cli, sweep as sweeps, tracking  # noqa: E402
from pipeline.cli import CONF_DIR  # noqa: E402
from pipeline.io import atomic_path, read_table, root, write_table  # noqa: E402


def outputs(cfg: DictConfig) -> dict[str, Path]:
    stem = Path(cfg.sweep_name).stem
    base = root(cfg) / cfg.paths.results
    return {ext: base / f"ablation_{stem}.{ext}" for ext in ("parquet", "png", "html")}


def verdicts(table: pd.DataFrame, factor: float) -> pd.DataFrame:
    def one(g: pd.DataFrame) -> str:
        if (g["dims"].fillna("") == "").all():
            return "none found"
        zero = g.loc[g["intervention"] == "zero", "ratio_to_none"]
        if zero.empty:
            return "no zero run"
        return "harmful" if zero.iloc[0] > factor else "harmless"

    keys = ["model", "corpus", "layers"]
    v = table.groupby(keys).apply(one, include_groups=False).rename("verdict").reset_index()
    return table.merge(v, on=keys)


def figure(table: pd.DataFrame):
    runs = table.groupby(["model", "corpus", "layers"], sort=True)
    order = list(dict.fromkeys(table["intervention"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(order) * max(1, runs.ngroups) / 2), 3.6))
    width = 0.8 / max(1, runs.ngroups)
    for i, ((model, corpus, layers), g) in enumerate(runs):
        g = g.set_index("intervention").reindex(order)
        ax.bar(np.arange(len(order)) + i * width, g["perplexity"], width, label=f"{model} / {corpus} / {layers}")
    ax.set_xticks(np.arange(len(order)) + width * (runs.ngroups - 1) / 2)
    ax.set_xticklabels(order)
    ax.set_yscale("log")
    ax.set_ylabel("perplexity")
    ax.legend(frameon=False, fontsize=7)
    ax.grid(alpha=0.3, axis="y", which="both")
    return fig


def reference(key: str) -> pd.DataFrame:
    """One table of the paper's numbers (conf/reference/paper.yaml), for comparison only."""
    return pd.DataFrame(yaml.safe_load((CONF_DIR / "reference" / "paper.yaml").read_text())[key])


def section(table: pd.DataFrame) -> str:
    order = list(dict.fromkeys(table["intervention"]))
    pivot = table.pivot_table(index=["model", "corpus", "layers", "blocks", "dims", "verdict"], columns="intervention",
                              values="perplexity")[order].reset_index()
    pivot.columns.name = None
    fmt = lambda v: f"{v:,.2f}"  # noqa: E731
    return ("<h2>Ablation: massive activations set to zero, to their mean, and a random control</h2>"
            "<p>Perplexity under each intervention at the blocks given by <code>layers</code> "
            "(<code>emerge</code>: where detection saw them appear). Verdict: harmful when zeroing multiplies "
            "perplexity by more than <code>ablate.harmful_factor</code>.</p>"
            + pivot.to_html(index=False, border=0, float_format=fmt, na_rep="-")
            + "<h3>The paper's numbers, for comparison</h3>"
            + reference("perplexity").to_html(index=False, border=0, float_format=fmt, na_rep="-"))


def zeroshot_section(tables: list[pd.DataFrame]) -> str:
    if not tables:
        return ""
    z = pd.concat(tables, ignore_index=True)
    z = z[z["metric"].isin(["acc", "acc_norm"])]
    pivot = z.pivot_table(index=["model", "layers", "task", "metric"], columns="intervention", values="value").reset_index()
    pivot.columns.name = None
    return ("<h3>Zero-shot accuracy under each intervention (lm-evaluation-harness)</h3>"
            + pivot.to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}", na_rep="-"))


def run(cfg: DictConfig) -> None:
    sweep = sweeps.load(cfg.sweep_name)
    spec = sweep.get("ablate") or {}
    dirs = [root(cfg) / cfg.paths.results / m / c / "ablate" / layers
            for m in sweep["models"] for c in sweep["corpora"] for layers in spec.get("layers", ["emerge"])]
    table = verdicts(pd.concat([read_table(d / "perplexity.parquet") for d in dirs], ignore_index=True), cfg.ablate.harmful_factor)
    zeroshot = [read_table(d / "zeroshot.parquet") for d in dirs if spec.get("zeroshot_tasks")]
    out = outputs(cfg)
    write_table(table, out["parquet"], cfg)
    fig = figure(table)
    with atomic_path(out["png"]) as tmp:
        fig.savefig(tmp, dpi=cfg.figures.dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    with atomic_path(out["html"]) as tmp:
        tmp.write_text(section(table) + zeroshot_section(zeroshot))
    with tracking.stage_run(cfg, name=f"ablation/{Path(cfg.sweep_name).stem}") as wb:
        wb.log({"ablation": tracking.table(table), "ablation_figure": tracking.image(out["png"])})


if __name__ == "__main__":
    cli.main("ablation", run)
