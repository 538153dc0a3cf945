"""Rule ablation: the sweep's ablation results in one table, one figure and a report section.

Reads every results/<model>/<corpus>/ablate/<layers>/perplexity.parquet of the sweep and writes
  results/ablation_<sweep>.parquet  all rows, plus the verdict per (model, corpus, layers):
                                    "harmful" when zeroing multiplies perplexity by more than
                                    ablate.harmful_factor, "harmless" otherwise, "none found"
                                    when detection found nothing to ablate
  results/ablation_<sweep>.png      perplexity per intervention, log axis
  results/ablation_<sweep>.html     the report section, with the paper's reference numbers
                                    (conf/reference/paper.yaml) beside ours
A perplexity or ratio that is inf or NaN (e.g. a float16 overflow) is an error, never a verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig

from massive import plots
from massive.errors import check_finite
from pipeline import cli, html, paths, sweep as sweeps, tracking
from pipeline.io import atomic_path, read_provenance, read_table, results_dir, write_table


def outputs(cfg: DictConfig) -> dict[str, Path]:
    return html.ablation_files(results_dir(cfg), cfg.sweep_name)


def check_finite_rows(table: pd.DataFrame, dtypes: dict[str, str] | None = None) -> None:
    """A NonFiniteError naming the first row whose perplexity or ratio_to_none is inf or NaN."""
    for col in ("perplexity", "ratio_to_none"):
        for _, row in table[~np.isfinite(table[col].astype(float))].head(1).iterrows():
            blocks = f", blocks {row['blocks']}" if row.get("blocks") else ""
            check_finite(float(row[col]), f"ablation: {col} of {row['model']} on {row['corpus']} (layers {row['layers']}"
                         f"{blocks}, intervention {row['intervention']})", (dtypes or {}).get(row["model"]))


def verdicts(table: pd.DataFrame, factor: float, dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    """`table` with a verdict per (model, corpus, layers): harmful, harmless, none found or no zero run.

        >>> t = pd.DataFrame({"model": "m", "corpus": "c", "layers": "emerge", "dims": "7",
        ...                   "intervention": ["none", "zero"], "perplexity": [20.0, 4000.0], "ratio_to_none": [1.0, 200.0]})
        >>> verdicts(t, factor=2.0)["verdict"].tolist()
        ['harmful', 'harmful']
    """
    check_finite_rows(table, dtypes)

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


def dtype_of(path: Path) -> str | None:
    """The model dtype a table was computed in, from the composed config in its provenance."""
    config = read_provenance(path).get("config")
    return (yaml.safe_load(config).get("model") or {}).get("dtype") if config else None


def run(cfg: DictConfig) -> None:
    sweep = sweeps.load(cfg.sweep_name)
    spec = sweep.get("ablate") or {}
    dirs = [Path(paths.ablate_dir(m, c, layers, results_dir(cfg)))
            for m in sweep["models"] for c in sweep["corpora"] for layers in spec.get("layers", ["emerge"])]
    tables = [read_table(d / "perplexity.parquet") for d in dirs]
    dtypes = {t["model"].iloc[0]: dtype_of(d / "perplexity.parquet") for d, t in zip(dirs, tables) if len(t)}
    table = verdicts(pd.concat(tables, ignore_index=True), cfg.ablate.harmful_factor, dtypes)
    zeroshot = [read_table(d / "zeroshot.parquet") for d in dirs if spec.get("zeroshot_tasks")]
    out = outputs(cfg)
    write_table(table, out["parquet"], cfg)
    html.save_figure(plots.ablation(table), out["png"], cfg.figures.dpi)
    with atomic_path(out["html"]) as tmp:
        tmp.write_text(html.ablation_section(table, zeroshot))
    with tracking.stage_run(cfg, name=f"ablation/{Path(cfg.sweep_name).stem}") as wb:
        wb.log({"ablation": tracking.table(table), "ablation_figure": tracking.image(out["png"])})


if __name__ == "__main__":
    cli.main("ablation", run)
