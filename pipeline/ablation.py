"""Rule ablation: the sweep's ablation results in one table, one figure and a report section.

Reads every results/<model>/<corpus>/ablate/<layers>/{perplexity,regrowth}.parquet of the sweep and writes
  results/ablation_<sweep>.parquet  all rows, with each row's effect and the verdict per (model,
                                    corpus, layers), both read from the 95% interval of the
                                    perplexity ratio (massive.intervene.comparison.verdict): "harmful" when its
                                    lower bound exceeds ablate.harmful_factor, "harmless" when its
                                    upper bound is below ablate.harmless_factor, "inconclusive"
                                    otherwise; the verdict is zeroing's ("none found" when
                                    detection found nothing to ablate)
  results/ablation_<sweep>.png      perplexity per intervention with its interval, log axis
  results/ablation_<sweep>_regrowth.parquet  every regrowth row of the sweep
  results/ablation_<sweep>_regrowth_<model>.png  the targeted entries downstream under none, zero, mean
  results/ablation_<sweep>.html     the report section: the tables, the regrowth figures, a reading
                                    of the evidence per model and corpus, and the paper's numbers
                                    (conf/reference/paper.yaml) beside ours
A perplexity or ratio that is inf or NaN (e.g. a float16 overflow) is an error, never a verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig

from massive.core.errors import check_finite
from massive.core.results import AblateTables, ZeroshotTables
from massive.intervene import ablation, comparison
from pipeline import cli, jobs, paths, tracking
from pipeline import sweep as sweeps
from pipeline.io import atomic_path, read_provenance, results_dir, write_table


def outputs(cfg: DictConfig) -> dict[str, Path]:
    from pipeline import html

    return html.ablation_files(results_dir(cfg), cfg.sweep_name)


def regrowth_outputs(cfg: DictConfig, models: list[str]) -> dict[str | None, Path]:
    """The regrowth table (key None) and each model's figure."""
    stem = Path(cfg.sweep_name).stem
    return {m: Path(paths.regrowth_file(stem, m, str(results_dir(cfg)))) for m in [None, *models]}


def check_finite_rows(table: pd.DataFrame, dtypes: dict[str, str] | None = None) -> None:
    """A NonFiniteError naming the first row whose perplexity, ratio or interval is inf or NaN."""
    for col in [c for c in ("perplexity", "ratio", "ppl_lo", "ppl_hi", "ratio_lo", "ratio_hi") if c in table]:
        for _, row in table[~np.isfinite(table[col].astype(float))].head(1).iterrows():
            blocks = f", blocks {row['blocks']}" if row.get("blocks") else ""
            check_finite(
                float(row[col]),
                f"ablation: {col} of {row['model']} on {row['corpus']} (layers {row['layers']}"
                f"{blocks}, intervention {row['intervention']})",
                (dtypes or {}).get(row["model"]),
            )


def verdicts(
    table: pd.DataFrame, factor: float, harmless: float = 1.1, dtypes: dict[str, str] | None = None
) -> pd.DataFrame:
    """`table` with each row's effect (harmful, harmless or inconclusive, from its ratio interval)
    and a verdict per (model, corpus, layers): zeroing's effect, none found or no zero run.

        >>> t = pd.DataFrame({"model": "m", "corpus": "c", "layers": "emerge", "dims": "7", "intervention": ["none", "zero"],
        ...                   "perplexity": [20.0, 4000.0], "ratio": [1.0, 200.0], "ratio_lo": [1.0, 150.0],
        ...                   "ratio_hi": [1.0, 260.0]})
        >>> verdicts(t, factor=2.0)["verdict"].tolist()
        ['harmful', 'harmful']
    """
    check_finite_rows(table, dtypes)
    table = table.drop(columns="verdict", errors="ignore")  # each row's (the ablate rule's) is its effect here
    table = table.assign(
        effect=[comparison.verdict(lo, hi, factor, harmless) for lo, hi in zip(table["ratio_lo"], table["ratio_hi"])]
    )

    def one(g: pd.DataFrame) -> str:
        if (g["dims"].fillna("") == "").all():
            return "none found"
        zero = g.loc[g["intervention"] == "zero", "effect"]
        return "no zero run" if zero.empty else zero.iloc[0]

    keys = ["model", "corpus", "layers"]
    v = table.groupby(keys, sort=False).apply(one, include_groups=False).rename("verdict").reset_index()
    return table.merge(v, on=keys)


def dtype_of(path: Path) -> str | None:
    """The model dtype a table was computed in, from the composed config in its provenance."""
    config = read_provenance(path).get("config")
    return (yaml.safe_load(config).get("model") or {}).get("dtype") if config else None


def run(cfg: DictConfig) -> None:
    from massive.plots import figures as plots
    from pipeline import html

    sweep = sweeps.load(cfg.sweep_name)
    spec = sweep.get("ablate") or {}
    plan = jobs.Plan(sweep, cfg.sweep_name)
    plan.ids(root=cfg.paths.root)  # the config ids of the sweep's ablate jobs: their folders
    where = plan.where(results_dir(cfg))
    runs = [
        (m, c, layers) for m in sweep["models"] for c in sweep["corpora"] for layers in spec.get("layers", ["emerge"])
    ]
    dirs = [where("ablate", *run) for run in runs]
    saved = [AblateTables.load(d) for d in dirs]  # rule ablate's tables (massive.core.results)
    tables = [s.perplexity for s in saved]
    dtypes = {t["model"].iloc[0]: dtype_of(d / "perplexity.parquet") for d, t in zip(dirs, tables) if len(t)}
    table = verdicts(
        pd.concat(tables, ignore_index=True), cfg.ablate.harmful_factor, cfg.ablate.harmless_factor, dtypes
    )
    regrowth = pd.concat([s.regrowth for s in saved], ignore_index=True)
    zeroshot = (
        [
            ZeroshotTables.load(where("zeroshot", m, c, layers)).zeroshot
            for m, c in sweeps.zeroshot_pairs(sweep)
            for layers in spec.get("layers", ["emerge"])
        ]
        if spec.get("zeroshot_tasks")
        else []
    )
    out, figs = outputs(cfg), regrowth_outputs(cfg, sweep["models"])
    write_table(table, out["parquet"], cfg)
    write_table(regrowth, figs[None], cfg)
    html.save_figure(plots.ablation(table), out["png"], cfg.figures.dpi)
    for model in sweep["models"]:
        html.save_figure(plots.regrowth(regrowth[regrowth["model"] == model], model), figs[model], cfg.figures.dpi)
    readings = ablation.readings(table, regrowth, cfg.ablate.regrow_share)
    with atomic_path(out["html"]) as tmp:
        tmp.write_text(
            html.ablation_section(
                table,
                zeroshot,
                readings,
                {m: figs[m] for m in sweep["models"]},
                (cfg.ablate.harmful_factor, cfg.ablate.harmless_factor, cfg.ablate.regrow_share),
                forest=out["png"],
            )
        )
    with tracking.stage_run(cfg, name=f"ablation/{Path(cfg.sweep_name).stem}") as wb:
        wb.log(
            {
                "ablation": tracking.table(table.drop(columns="chunk_nll", errors="ignore")),
                "regrowth": tracking.table(regrowth),
                "ablation_figure": tracking.image(out["png"]),
                **{f"regrowth/{m}": tracking.image(figs[m]) for m in sweep["models"]},
            }
        )


if __name__ == "__main__":
    cli.main("ablation", run)
