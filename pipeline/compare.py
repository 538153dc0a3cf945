"""Rule compare: two sweeps (experiments) side by side, from the outputs both have written.

    snakemake --cores 2 --config sweep=mine.yaml compare=default   # after running both sweeps
    python -m pipeline.compare default mine.yaml                  # the same page, by hand

One self-contained HTML page, results/compare_<a>_vs_<b>.html:
- the settings that differ: the sweep files' entries, then per stage the resolved config keys its
  settings.yaml records (pipeline/stages.py), with the value in each sweep;
- the findings of every (model, corpus) both sweeps measured, side by side: massive dims and token
  roles, emergence block, largest ratio to the median, the ablation verdicts with their intervals,
  the Sink_1 share; a changed value is marked.
Each sweep's numbers come from that sweep's own keyed folders (pipeline.jobs.Plan), never from a
folder another setting wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml
from markupsafe import Markup

from massive.core.errors import MassiveError
from pipeline import html, jobs, paths
from pipeline import sweep as sweeps

FINDINGS = ["found", "dims", "roles", "emerge_layer", "largest_ratio", "ablation", "sink_1_share"]


def flatten(value, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def show(value) -> str:
    """A setting's value as written in YAML/JSON (a list stays a list: [3, 99])."""
    return value if isinstance(value, str) else json.dumps(value)


def sweep_differences(a: dict, b: dict) -> pd.DataFrame:
    """The entries of two sweep files that differ (after load's defaults)."""
    fa, fb = flatten(a), flatten(b)
    rows = [
        {"setting": k, "a": show(fa.get(k, "-")), "b": show(fb.get(k, "-"))}
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k)
    ]
    return pd.DataFrame(rows, columns=["setting", "a", "b"])


def _manifest(plan: jobs.Plan, job: tuple, results: str) -> dict | None:
    d = plan.dir(*job, results=results)
    f = Path(d) / paths.MANIFEST if d else None
    return yaml.safe_load(f.read_text()) if f is not None and f.is_file() else None


def stage_differences(plans: tuple[jobs.Plan, jobs.Plan], results: str) -> pd.DataFrame:
    """Per stage, the resolved keys whose values differ between the two sweeps' jobs of one
    (model, corpus[, layers]), read from their settings.yaml; one row per (stage, key, values)."""
    ids = [p.ids() for p in plans]
    rows = {}
    for job in [j for j in ids[0] if j in ids[1] and ids[0][j] != ids[1][j]]:
        ma, mb = (_manifest(p, (job[0], *job[1:]), results) for p in plans)
        if ma is None or mb is None:
            continue
        fa, fb = flatten(ma["reads"]), flatten(mb["reads"])
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                row = rows.setdefault(
                    (key, repr(fa.get(key, "-")), repr(fb.get(key, "-"))),
                    {"setting": key, "a": show(fa.get(key, "-")), "b": show(fb.get(key, "-")), "stages": []},
                )
                if job[0] not in row["stages"]:
                    row["stages"].append(job[0])
    out = pd.DataFrame(list(rows.values()), columns=["setting", "a", "b", "stages"])
    out["stages"] = out["stages"].map(", ".join)
    return out


def findings(plan: jobs.Plan, sweep: dict, name: str, results: str) -> pd.DataFrame:
    """The sweep's summary rows (html.summary) from its own keyed folders."""
    where = plan.where(results)
    sections = []
    for m, c in sweeps.pairs(sweep):
        det, att = where("detect", m, c), where("attention", m, c)
        if det is None or not (det / "summary.json").is_file():
            raise MassiveError(
                f"compare: sweep {name!r} has no detection of {m} on {c} ({det}): run it first "
                f"(snakemake --cores 2 --config sweep={name})"
            )
        sections.append(
            {
                "model": m,
                "corpus": c,
                "result": json.loads((det / "summary.json").read_text()),
                "attention": json.loads((att / "summary.json").read_text())
                if att and (att / "summary.json").is_file()
                else None,
            }
        )
    table = Path(paths.ablation_file(sweeps.path_of(name).stem, "parquet", results))
    ablation = pd.read_parquet(table) if sweep.get("ablate") and table.is_file() else None
    return html.summary(sections, ablation)


def side_by_side(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, corpus) both measured; per finding the value in a and in b, `changed` naming those that differ."""
    both = a.merge(b, on=["model", "corpus"], suffixes=(" (a)", " (b)"))
    cols = ["model", "corpus"]
    for f in FINDINGS:
        cols += [f"{f} (a)", f"{f} (b)"]

    def same(x, y) -> bool:
        return (
            (pd.isna(x) and pd.isna(y))
            if (not isinstance(x, str) and pd.isna(x)) or (not isinstance(y, str) and pd.isna(y))
            else x == y
        )

    both["changed"] = [
        ", ".join(f for f in FINDINGS if not same(r[f"{f} (a)"], r[f"{f} (b)"])) for _, r in both.iterrows()
    ]
    return both[cols + ["changed"]]


def render(a: str, b: str, results: str = paths.RESULTS, root: str = ".") -> str:
    loaded = [sweeps.load(n) for n in (a, b)]
    plans = tuple(jobs.Plan(s, n) for s, n in zip(loaded, (a, b)))
    for p in plans:
        p.ids(root=root)
    names = [sweeps.path_of(n).stem for n in (a, b)]
    table = side_by_side(*(findings(p, s, n, results) for p, s, n in zip(plans, loaded, (a, b))))
    return html.render(
        "compare.html.j2",
        a=names[0],
        b=names[1],
        sweep_diff=html.table(sweep_differences(*loaded), float_format=None, none_found=True),
        stage_diff=html.table(stage_differences(plans, results), float_format=None, none_found=True),
        findings=html.table(table),
        n_changed=int((table["changed"] != "").sum()),
        n_pairs=len(table),
        plotly_js=Markup(""),
    )


def main(argv: list[str] | None = None) -> None:
    from massive.core.files import atomic_path

    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="a sweep: a name in conf/sweep/ or a path to a sweep YAML")
    parser.add_argument("b", help="the other sweep")
    parser.add_argument("--out", help="the page (default: results/compare_<a>_vs_<b>.html)")
    args = parser.parse_args(argv)
    try:
        out = Path(args.out or paths.compare_file(sweeps.path_of(args.a).stem, sweeps.path_of(args.b).stem))
        text = render(args.a, args.b)
    except MassiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    print(out)


if __name__ == "__main__":
    main()
