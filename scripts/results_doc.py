"""Write docs/results.md, the README's numbers and docs/schemas.md from a working directory's results/.

Every number a reader sees in the README and docs/results.md comes from a run: this script reads the
sweep's tables (the keyed folders of exactly its jobs, pipeline.jobs.Plan, as the report does) and
writes them out with the machine, commit and date they were computed on (each table's provenance).
Numbers that depend on the CPU or on the seed are marked (†), with their spread where the results
hold several seeds.

    python scripts/results_doc.py                       # after `snakemake`, in the repository
    python scripts/results_doc.py --workdir /scratch/run --sweep default --readme README.md

Outputs (each optional): --results-md (docs/results.md), --readme (the block between
`<!-- results:begin -->` and `<!-- results:end -->` is replaced), --schemas (docs/schemas.md: every
table's columns, its Arrow type and the report's heading from pipeline/columns.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import columns, paths  # noqa: E402

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
DAGGER = "†"
CPU_NOTE = (
    f"{DAGGER} depends on the CPU or the seed: a destroyed model's perplexity and a quantiser's rounding "
    "amplify last-digit differences of float32 arithmetic between CPUs (int4 per-token activations differ by tens of "
    "percent between two machines at the same commit), and the retraining bed's ratios move with the seed and the CPU. "
    "Compare them across machines with their spread, not digit for digit."
)


# ---------------------------------------------------------------- reading
def machine_here() -> str:
    from pipeline.io import machine

    return machine()


class Run:
    """The tables of one sweep in one working directory, found as the report finds them."""

    def __init__(self, workdir: Path, sweep_name: str):
        from pipeline import jobs
        from pipeline import sweep as sweeps

        self.workdir, self.sweep_name = workdir, sweep_name
        self.stem = Path(sweep_name).stem
        os.chdir(workdir)  # the sweep's paths are relative to the working directory, as under snakemake
        self.sweep = sweeps.load(sweep_name)
        plan = jobs.Plan(self.sweep, sweep_name)
        plan.ids(root=".")
        self.where = plan.where(paths.RESULTS)
        self.pairs = [(m, c) for m in self.sweep["models"] for c in self.sweep["corpora"]]
        self.runs = self.pairs + sweeps.protocol_pairs(self.sweep)
        self.layers = (self.sweep.get("ablate") or {}).get("layers", ["emerge"])
        self.train = [name for name, _, _ in sweeps.train_runs(self.sweep)]
        self.used: list[Path] = []

    def table(self, path: Path | None) -> pd.DataFrame | None:
        from pipeline.io import read_table

        if path is None or not path.is_file():
            return None
        self.used.append(path)
        return read_table(path)

    def json(self, path: Path | None) -> dict | None:
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    def file(self, stage: str, run: str, corpus: str, name: str, layers: str | None = None) -> Path | None:
        d = self.where(stage, run, corpus, *([layers] if layers else []))
        return d / name if d is not None else None

    def provenance(self) -> dict[str, list[str]]:
        """Each provenance field's distinct values over the tables read, and the newest table's time."""
        from pipeline.io import read_provenance

        out: dict[str, list[str]] = {"machine": [], "git_commit": [], "seed": []}
        for p in self.used:
            meta = read_provenance(p)
            for k in out:
                v = meta.get(k)
                if v is not None and v not in out[k]:
                    out[k].append(v)
        newest = max((p.stat().st_mtime for p in self.used), default=None)
        out["date"] = (
            [dt.datetime.fromtimestamp(newest, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")] if newest else []
        )
        meta = read_provenance(self.used[0]) if self.used else {}
        pk = json.loads(meta.get("packages", "{}"))
        out["packages"] = [", ".join(f"{k} {pk[k]}" for k in ("torch", "transformers") if k in pk)]
        return out


# ---------------------------------------------------------------- formatting
def fmt(name: str, v) -> str:
    """One cell in the report's format for its column (pipeline/columns.py)."""
    return columns.cell(name, v)


def x(v: float) -> str:
    return f"×{columns.sig3(v)}"


def ci(lo: float, hi: float) -> str:
    return f"[{columns.sig3(lo)}, {columns.sig3(hi)}]"


def md(df: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    """A DataFrame as a Markdown table: headings and formats from pipeline/columns.py (strings as they are)."""
    labels = labels or {}
    heads = [labels.get(c, columns.label(c)) for c in df.columns]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in heads) + " |", "|" + "---|" * len(heads)]
    for row in df.itertuples(index=False):
        cells = [v if isinstance(v, str) else fmt(c, v) for c, v in zip(df.columns, row)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def block_ranges(blocks: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out, start = [], None
    for i, b in enumerate(blocks):
        if start is None:
            start = b
        if i + 1 == len(blocks) or blocks[i + 1] != b + 1:
            out.append(f"{start}-{b}" if b != start else f"{b}")
            start = None
    return ", ".join(out)


def compact_blocks(text) -> str:
    """'11,12,13,14' -> '11-14' (a blocks column); anything else as it is."""
    parts = str(text or "").split(",")
    return block_ranges([int(p) for p in parts]) if all(p.strip().isdigit() for p in parts) else str(text or "")


# ---------------------------------------------------------------- sections
def detection(run: Run) -> tuple[str, dict]:
    rows, facts, curves = [], {}, []
    for m, c in run.runs:
        s = run.table(run.file("detect", m, c, "summary.parquet"))
        res = run.json(run.file("detect", m, c, "summary.json")) or {}
        per_layer = run.table(run.file("detect", m, c, "per_layer.parquet"))
        if s is None:
            continue
        facts[(m, c)] = {"result": res, "summary": s}
        if s.empty:
            rows.append({"run": m, "corpus": c, "protocol": res.get("protocol", "-"), "dim": "none found"})
        for _, r in s.sort_values("mean_value", key=abs, ascending=False).iterrows():
            rows.append(
                {
                    "run": m,
                    "corpus": c,
                    "protocol": res.get("protocol", "-"),
                    "dim": int(r["dim"]),
                    "role": r["role"],
                    "emerge_layer": r["emerge_layer"],
                    "fade_layer": r["fade_layer"],
                    "peak_layer": r["peak_layer"],
                    "mean_value": abs(r["mean_value"]),
                    "std_value": r["std_value"],
                    "median_abs_at_peak": r["median_abs_at_peak"],
                    "ratio_at_peak": r["ratio_at_peak"],
                }
            )
        if per_layer is not None and len(per_layer):
            top = ", ".join(f"{int(r.layer)}: {columns.sig3(r.top1_abs)}" for r in per_layer.itertuples())
            curves.append(f"- **{m} on {c}** (top-1 |a| after each block): {top}")
    t = pd.DataFrame(rows)
    text = [
        "## Massive activations",
        "",
        "Rule detect: an entry is massive when |a| > `detect.min_abs` and > `detect.min_ratio` × the median |a| of its "
        "layer and sequence. One row per dim and token role; `fade_layer` empty: present to the last block.",
        "",
        md(t.fillna("")) if len(t) else "none",
        "",
        "The curve of the largest entry, block by block:",
        "",
        *curves,
    ]
    return "\n".join(text), facts


def ablation(run: Run) -> tuple[str, pd.DataFrame | None]:
    t = run.table(Path(paths.ablation_file(run.stem, "parquet", paths.RESULTS)))
    if t is None:
        return "", None
    out = [
        "## Ablation",
        "",
        "Rules ablate and ablation: perplexity under each intervention at the `layers` blocks, with the 95% interval "
        "(seeded paired bootstrap over the chunks) of its ratio to `none`; the verdict reads zeroing's interval. "
        f"A destroyed model's perplexity (`zero`) moves in its last digits with the CPU ({DAGGER}).",
        "",
    ]
    for (m, c, layers), g in t.groupby(["model", "corpus", "layers"], sort=False):
        rows = [
            {
                "intervention": r["intervention"] + (f" {DAGGER}" if r["intervention"] == "zero" else ""),
                "blocks": compact_blocks(r["blocks"]),
                "entries_changed": r["entries_changed"],
                "perplexity": r["perplexity"],
                "ratio": x(r["ratio"]),
                "95% interval": ci(r["ratio_lo"], r["ratio_hi"]),
                "effect": r["effect"],
            }
            for _, r in g.iterrows()
        ]
        out += [
            f"**{m} on {c}, layers `{layers}`** ({int(g['n_chunks'].iloc[0])} chunks x "
            f"{int(g['n_tokens'].iloc[0] / g['n_chunks'].iloc[0]) + 1} tokens; dims {g['dims'].iloc[0] or '-'}): "
            f"verdict **{g['verdict'].iloc[0]}**",
            "",
            md(pd.DataFrame(rows)),
            "",
        ]
    return "\n".join(out), t


def attention(run: Run) -> tuple[str, dict]:
    out, facts = (
        [
            "## Attention",
            "",
            "Rule attention: the share of heads whose later queries put > 0.3 of their attention "
            "on the first token (Sink₁), the attention on the first token per block, and perplexity with the massive "
            "tokens' part of the attention output fixed to its mean, or removed.",
            "",
        ],
        {},
    )
    rows = []
    for m, c in run.runs:
        res = run.json(run.file("attention", m, c, "summary.json"))
        layers = run.table(run.file("attention", m, c, "layers.parquet"))
        ppl = run.table(run.file("attention", m, c, "perplexity.parquet"))
        if res is None:
            continue
        high = [int(r.layer) for r in layers.itertuples() if r.mass_first > 0.5] if layers is not None else []
        facts[(m, c)] = {
            "sink_1_share": res.get("sink_1_share"),
            "mass_first": res.get("mass_first_mean"),
            "above_half": high,
            "layers": layers,
        }
        row = {
            "run": m,
            "corpus": c,
            "sink_1_share": res.get("sink_1_share"),
            "mass_first_mean": res.get("mass_first_mean"),
            "blocks where it is > 0.5": block_ranges(high) or "-",
        }
        if ppl is not None:
            for r in ppl.itertuples():
                row[f"perplexity: {r.variant}"] = f"{columns.FORMATS['ppl'](r.perplexity)} ({x(r.ratio)})"
        rows.append(row)
        if layers is not None:
            out.append(
                f"- **{m} on {c}**, attention on the first token after each block: "
                + ", ".join(f"{int(r.layer)}: {r.mass_first:.2f}" for r in layers.itertuples())
            )
    if rows:
        t = pd.DataFrame(rows).fillna("-")
        out = out[:4] + [md(t), ""] + out[4:]
    return "\n".join(out) if rows else "", facts


def origins(run: Run) -> tuple[str, dict]:
    out, facts = (
        [
            "## Where they come from",
            "",
            "Rule origins: the sublayer that writes each massive activation at its "
            "emergence block, the super weight (the down projection's input channel that carries the write), and "
            "perplexity with it zeroed against the controls.",
            "",
        ],
        {},
    )
    found = False
    for m, c in run.pairs:
        sub = run.table(run.file("origins", m, c, "sublayers.parquet"))
        sw = run.table(run.file("origins", m, c, "superweights.parquet"))
        ppl = run.table(run.file("origins", m, c, "perplexity.parquet"))
        if sub is None:
            continue
        found = True
        writes = sub[sub["writes"].astype(bool)][["dim", "role", "block", "part", "contribution", "value", "share"]]
        prim = sw[sw["primary"].astype(bool)] if sw is not None and len(sw) else pd.DataFrame()
        facts[(m, c)] = {"superweights": prim, "perplexity": ppl}
        out += [f"**{m} on {c}**", "", md(writes) if len(writes) else "no writing sublayer found", ""]
        if len(prim):
            p = prim[
                [
                    "dim",
                    "block",
                    "channel",
                    "input_value",
                    "input_ratio",
                    "share",
                    "param",
                    "coordinate",
                    "weight",
                    "abs_rank",
                ]
            ].assign(abs_rank=[f"{int(r.abs_rank):,} of {int(r.n_weights):,}" for r in prim.itertuples()])
            out += [md(p), ""]
        if ppl is not None and len(ppl):
            out += [md(ppl[["intervention", "kind", "edited", "massive_abs", "perplexity", "ratio", "n_chunks"]]), ""]
    return "\n".join(out) if found else "", facts


def inference(run: Run) -> tuple[str, dict]:
    out, facts = (
        [
            "## At inference",
            "",
            "Rule inference: float16/bfloat16 headroom at the largest |a|, simulated int8/int4 "
            "quantization, and windowed attention with and without the sink. Activation quantization results are "
            f"CPU-dependent ({DAGGER}): a few entries on a rounding boundary decide the int4 results.",
            "",
        ],
        {},
    )
    found = False
    for m, c in run.pairs:
        h = run.table(run.file("inference", m, c, "headroom.parquet"))
        q = run.table(run.file("inference", m, c, "quantization.parquet"))
        w = run.table(run.file("inference", m, c, "window.parquet"))
        if h is None:
            continue
        found = True
        f16 = h[h["format"] == "float16"]
        top = f16.loc[f16["max_abs"].idxmax()] if len(f16) else None
        facts[(m, c)] = {"headroom": top, "quantization": q, "window": w}
        out.append(f"**{m} on {c}**")
        out.append("")
        if top is not None:
            out += [
                f"Largest |a| {columns.magnitude(top['max_abs'])} (dim {int(top['dim'])}, block {int(top['layer'])}): float16 "
                f"headroom {x(top['headroom'])}, spacing {top['spacing']:g} there; measured in float16: "
                f"{columns.magnitude(top['measured_max_abs'])}, {int(top['measured_inf'])} inf, {int(top['measured_nan'])} NaN.",
                "",
            ]
        if q is not None:
            qq = q.assign(
                label=[lab + (f" {DAGGER}" if kind == "activation" else "") for lab, kind in zip(q["label"], q["kind"])]
            )
            out += [md(qq[["label", "massive", "perplexity", "ratio", "rel_error"]]), ""]
        if w is not None:
            ww = w.assign(window=w["window"].astype(object).where(w["window"].notna(), "-").astype(str))
            out += [md(ww[["variant", "window", "sinks", "sink_massive", "perplexity", "ratio"]]), ""]
    return "\n".join(out) if found else "", facts


def vision(run: Run) -> str:
    v = run.sweep.get("vision")
    if not v:
        return ""
    tables = [
        run.table(run.file("ablate_images", m, i, "images.parquet", layers))
        for m in v["models"]
        for i in v["images"]
        for layers in v["layers"]
    ]
    tables = [t for t in tables if t is not None]
    if not tables:
        return ""
    t = pd.concat(tables, ignore_index=True)
    return "\n".join(
        [
            "## Vision transformers",
            "",
            "Rule ablate_images: the final CLS embedding under each intervention.",
            "",
            md(
                t[
                    [
                        "model",
                        "corpus",
                        "intervention",
                        "blocks",
                        "n_images",
                        "cls_cosine",
                        "cls_cosine_min",
                        "cls_rel_change",
                        "entries_changed",
                    ]
                ]
            ),
            "",
        ]
    )


TRAIN_SHOWN = [
    "variant",
    "step",
    "val_loss",
    "block0_start_over_median",
    "start_over_median",
    "start_layer",
    "start_attn",
    "slot_attn",
    "sink1",
    "start_contrast",
    "matched_step",
    "matched_contrast",
]


def training(run: Run) -> tuple[str, list[pd.DataFrame]]:
    from pipeline.io import read_provenance

    out, found = (
        [
            "## Retraining",
            "",
            f"Rules train and train_compare on the CPU test bed. Seed- and CPU-dependent ({DAGGER}): "
            "the start token's ratio to the median and the contrasts between variants.",
        ],
        [],
    )
    for name in run.train:
        t = run.table(Path(paths.train_dir(name, paths.RESULTS)) / "comparison.parquet")
        if t is None:
            continue
        seeds = sorted(
            {
                read_provenance(p).get("seed")
                for p in Path(paths.train_dir(name, paths.RESULTS)).glob("*/metrics.parquet")
            }
        )
        found.append(t)
        shown = [c for c in TRAIN_SHOWN if c in t]
        out += [
            "",
            f"**{name}** (seed {', '.join(s for s in seeds if s)}"
            + (
                "; one seed: its spread is not measured here, [retraining.md](retraining.md) has two seeds)"
                if len(seeds) <= 1
                else ")"
            ),
            "",
            md(t[shown]),
        ]
        if "seed" in t and t["seed"].nunique() > 1:  # several seeds in one comparison: the spread per variant
            spread = t.groupby("variant")["start_over_median"].agg(["min", "max"]).reset_index()
            out += ["", "Spread across seeds (start token / median):", "", md(spread)]
    return ("\n".join(out) + "\n") if found else "", found


def retrofit(run: Run) -> str:
    out, found = (
        [
            "## Retrofit",
            "",
            "Rule retrofit: held-out perplexity of the frozen model with its massive activations "
            f"zeroed and one explicit bias trained in their place, as a ratio to the intact model ({DAGGER} seed).",
        ],
        False,
    )
    for m, c in run.pairs:
        s = run.table(run.file("retrofit", m, c, "summary.parquet"))
        if s is None:
            continue
        found = True
        s = s.assign(interval=[ci(lo, hi) for lo, hi in zip(s["ratio_lo"], s["ratio_hi"])])
        out += [
            "",
            f"**{m} on {c}**",
            "",
            md(
                s[
                    [
                        k
                        for k in (
                            "arm",
                            "seed",
                            "variant",
                            "massive",
                            "params",
                            "step",
                            "perplexity",
                            "ratio_to_intact",
                            "interval",
                        )
                        if k in s
                    ]
                ]
            ),
        ]
        if "seed" in s and s["seed"].nunique() > 1:  # the spread across seeds, per arm
            spread = s.groupby("arm", sort=False)["ratio_to_intact"].agg(["median", "min", "max"]).reset_index()
            out += [
                "",
                f"Across seeds {', '.join(map(str, sorted(s['seed'].unique())))} (ratio to intact):",
                "",
                md(spread, {"median": "median (×)", "min": "lowest (×)", "max": "highest (×)"}),
            ]
    return ("\n".join(out) + "\n") if found else ""


# ---------------------------------------------------------------- the documents
def header(run: Run, prov: dict) -> str:
    machines = prov["machine"] or [
        f"{machine_here()} (the machine this script ran on: the tables do not record theirs)"
    ]
    commits = list(
        dict.fromkeys(
            c[:12] + (" (with uncommitted changes)" if c.endswith("-dirty") else "") for c in prov["git_commit"]
        )
    )
    seeds = prov["seed"]
    return "\n".join(
        [
            f"# Results of the `{run.stem}` sweep",
            "",
            "Generated by `python scripts/results_doc.py` from the run's `results/`; do not edit by hand. Every number below "
            "is read from the tables the rules wrote (Parquet, with their config in the metadata).",
            "",
            f"- machine: {'; '.join(machines)}",
            f"- commit: {', '.join(commits) or 'unknown'}",
            f"- date (newest table): {', '.join(prov['date']) or 'unknown'}",
            f"- packages: {', '.join(prov['packages'])}",
            f"- seed: {', '.join(seeds) or 'unknown'}",
            "",
            CPU_NOTE,
            "",
        ]
    )


def readme_block(run: Run, facts: dict, ablation_table: pd.DataFrame | None, prov: dict) -> str:
    """The README's few numbers: one column per (model, corpus) that found something, one row per quantity."""
    det, att, ori, inf = facts["detect"], facts["attention"], facts["origins"], facts["inference"]
    cols = [(m, c) for m, c in run.pairs if (m, c) in det and det[(m, c)]["result"].get("found")]
    if not cols:
        return "No massive activation found in this run."
    rows: dict[str, list[str]] = {}

    def put(label: str, key, value: str | None) -> None:
        rows.setdefault(label, ["-"] * len(cols))[cols.index(key)] = value if value is not None else "-"

    for key in cols:
        res, s = det[key]["result"], det[key]["summary"]
        top = s.loc[s["mean_value"].abs().idxmax()]
        put("massive dims (token role)", key, f"{', '.join(map(str, res['dims']))} ({', '.join(res['roles'])})")
        put(
            "emerges after block",
            key,
            f"{res['emerge_layer']} of 0-{res['n_layers'] - 1}" if res.get("n_layers") else str(res["emerge_layer"]),
        )
        put(
            "largest mean \\|a\\| (× median \\|a\\|)",
            key,
            f"{columns.magnitude(abs(top['mean_value']))} ({x(top['ratio_at_peak'])})",
        )
        if ablation_table is not None and run.layers:  # the first set of blocks the ablation ran (emerge, by default)
            layers = run.layers[0]
            g = ablation_table[
                (ablation_table["model"] == key[0])
                & (ablation_table["corpus"] == key[1])
                & (ablation_table["layers"] == layers)
            ].set_index("intervention")
            where = f"block {g['blocks'].iloc[0]}" if "blocks" in g and len(g) else f"`{layers}`"
            for name, what in (("zero", "zeroed"), ("mean", "set to their mean")):
                if name in g.index:
                    r = g.loc[name]
                    extra = f" {DAGGER}, {r['verdict']}" if name == "zero" and "verdict" in r else ""
                    put(
                        f"perplexity with them {what} at {where}: × none [95%]",
                        key,
                        f"{x(r['ratio'])} {ci(r['ratio_lo'], r['ratio_hi'])}{extra}",
                    )
        if key in ori and len(ori[key]["superweights"]):
            sw = (
                ori[key]["superweights"].sort_values("product", key=abs, ascending=False).iloc[0]
                if "product" in ori[key]["superweights"]
                else ori[key]["superweights"].iloc[0]
            )
            put(
                "super weight (rank of \\|w\\|)",
                key,
                f"`{sw['param'].removeprefix('model.')}{sw['coordinate']}` = "
                f"{columns.FORMATS['weight'](sw['weight'])} ({int(sw['abs_rank']):,} of {int(sw['n_weights']):,})",
            )
            p = ori[key]["perplexity"]
            if p is not None and "zero_super_weight" in set(p["intervention"]):
                put(
                    "perplexity, super weight zeroed",
                    key,
                    x(p.set_index("intervention").loc["zero_super_weight", "ratio"]),
                )
        if key in att:
            a = att[key]
            put(
                "Sink₁ share of heads",
                key,
                columns.FORMATS["share"](a["sink_1_share"]) if a["sink_1_share"] is not None else None,
            )
            put("blocks whose attention on the first token > 0.5", key, block_ranges(a["above_half"]) or "none")
        if key in inf and inf[key]["headroom"] is not None:
            h = inf[key]["headroom"]
            put("float16 headroom at the largest \\|a\\|", key, x(h["headroom"]))
            q = inf[key]["quantization"]
            if q is not None and "a4_per_token" in set(q["scheme"]):
                r = q[(q["scheme"] == "a4_per_token") & (q["massive"] == "as is")].iloc[0]
                put(f"perplexity, int4 per-token activations {DAGGER}", key, x(r["ratio"]))
        s = facts.get("retrofit", {}).get(key)
        if s is not None:  # zeroed from their emergence block, then each arm trained: its ratio to intact
            arms = s[s["massive"] == "ablated"].groupby("arm", sort=False)["ratio_to_intact"].median()
            put(
                f"retrofit: zeroed from emergence, × intact after training {DAGGER}",
                key,
                "; ".join(f"{arm} {x(v)}" for arm, v in arms.items()),
            )
    heads = [f"{m} on {c}" if len({mm for mm, _ in cols}) > 1 else c for m, c in cols]
    lines = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows.items()]
    machines = (
        "; ".join(prov["machine"]) or f"{machine_here()} (where this script ran; the tables do not record theirs)"
    )
    commits = ", ".join(dict.fromkeys(c[:7] for c in prov["git_commit"])) or "unknown"
    lines += [
        "",
        f"Measured on {machines}, commit {commits}, {', '.join(prov['date'])}. {DAGGER} depends on the CPU "
        "or the seed ([docs/results.md](docs/results.md) says how much).",
    ]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """The text with what lies between the results markers replaced by `block`; a text without the markers is an error."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: no {BEGIN} ... {END} block to fill")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}"


# ---------------------------------------------------------------- table schemas
TABLES = {  # file -> (one row per, notes on columns); the columns themselves come from the run's files
    "tokenize/tokens.parquet": ("sequence", "seq_id, input_ids (or the image processor's pixel values for a ViT)"),
    "capture/layer_stats.parquet": (
        "layer, sequence",
        "n_massive_<abs>_<ratio>: exact counts above both massive thresholds, for each pair of capture.counts' ladders",
    ),
    "capture/topk.parquet": ("layer, sequence, rank", "value is signed; abs_value its magnitude"),
    "capture/dim_max.parquet": (
        "layer, dim",
        "max_abs over all tokens and sequences; n_outlier_<abs>_<ratio>: positions above the "
        "outlier magnitude; n_massive_<abs>_<ratio>: positions above both massive thresholds (each pair of the ladders)",
    ),
    "capture/prompt.parquet": ("layer, position of `capture.prompt`", "values: the whole signed vector"),
    "detect/massive.parquet": ("massive entry", "the topk columns + median_abs, ratio, role"),
    "detect/summary.parquet": (
        "dim and role",
        "fade_layer null: lasts to the last block; std_value across sequences at the peak layer",
    ),
    "detect/per_layer.parquet": (
        "layer",
        "massive_per_sequence is exact; massive_at: 'dim: token (sequences), ...'; outlier_dims: dense there",
    ),
    "detect/outliers.parquet": (
        "outlier feature dim",
        "criterion: llm_int8 or dense_massive; token_share: mean over its layers",
    ),
    "ablate/perplexity.parquet": (
        "intervention",
        "ratio with its 95% interval ratio_lo, ratio_hi (paired bootstrap); chunk_nll: each chunk's mean NLL",
    ),
    "ablate/regrowth.parquet": (
        "intervention x block",
        "mean |a| of the targeted entries, and share: that over the unablated value",
    ),
    "ablate/images.parquet": ("intervention (ViTs)", "cls_cosine: the final CLS embedding against the model's own"),
    "attention/layers.parquet": (
        "layer",
        "mass_first: attention on the first token; sink_1_share: heads with > 0.3 there",
    ),
    "attention/heads.parquet": ("layer x head", ""),
    "attention/decomposition.parquet": (
        "layer x head",
        "the head output split into the massive tokens' part and the rest",
    ),
    "attention/perplexity.parquet": (
        "variant",
        "the massive tokens' part fixed to its mean, removed, or a random token's part",
    ),
    "origins/sublayers.parquet": (
        "massive activation x listed block x part",
        "part: attn, mlp, other (what the two leave unexplained, "
        "e.g. post-norms); share of the value after the peak block",
    ),
    "origins/superweights.parquet": (
        "massive activation x expert x input channel",
        "expert null for a dense MLP; input_ratio: the "
        "input's spike / the token's median |x|; coordinate: the weight's own index; primary: the super weight",
    ),
    "origins/perplexity.parquet": (
        "weight intervention",
        "massive_abs: mean |a| of the baseline's massive entries at their writing "
        "block's output, under the intervention",
    ),
    "inference/headroom.parquet": (
        "block x format",
        "max_abs from the reference run; measured_*: the run in that format",
    ),
    "inference/quantization.parquet": ("scheme x massive (as is, mean)", "perplexity null: not finite, see note"),
    "inference/window.parquet": ("variant x W x S", "sink_massive: as is, mean, zero"),
    "retrofit/summary.parquet": ("arm", "ratio_to_intact with its interval ratio_lo, ratio_hi"),
    "ablation_<sweep>.parquet": ("model, corpus, layers, intervention", "every ablate row + effect and verdict"),
    "train/<config>/comparison.parquet": ("variant", "contrasts to default at the final step and at matched loss"),
    "train/<config>/<variant>/metrics.parquet": ("evaluation step x layer", ""),
}


def schema_files(run: Run) -> dict[str, Path]:
    """One file of each table kind in the run."""
    out: dict[str, Path] = {}
    for m, c in run.runs + [
        (m, i)
        for m in (run.sweep.get("vision") or {}).get("models", [])
        for i in (run.sweep.get("vision") or {}).get("images", [])
    ]:
        for stage in ("tokenize", "capture", "detect", "attention", "origins", "inference", "retrofit"):
            d = run.where(stage, m, c)
            for f in sorted(d.glob("*.parquet")) if d is not None and d.is_dir() else []:
                out.setdefault(f"{stage}/{f.name}", f)
        for layers in run.layers + (run.sweep.get("vision") or {}).get("layers", []):
            for stage in ("ablate", "ablate_images"):
                d = run.where(stage, m, c, layers)
                for f in sorted(d.glob("*.parquet")) if d is not None and d.is_dir() else []:
                    out.setdefault(f"ablate/{f.name}", f)
    a = Path(paths.ablation_file(run.stem, "parquet", paths.RESULTS))
    if a.is_file():
        out["ablation_<sweep>.parquet"] = a
    for name in run.train:
        d = Path(paths.train_dir(name, paths.RESULTS))
        if (d / "comparison.parquet").is_file():
            out.setdefault("train/<config>/comparison.parquet", d / "comparison.parquet")
        for f in sorted(d.glob("*/metrics.parquet")):
            out.setdefault("train/<config>/<variant>/metrics.parquet", f)
    return out


def schemas(run: Run) -> str:
    import pyarrow.parquet as pq

    lines = [
        "# Result tables",
        "",
        "Generated by `python scripts/results_doc.py --schemas docs/schemas.md` from a run's files: every table's "
        "columns with their Arrow type and the heading the report shows (pipeline/columns.py). Every Parquet file "
        "also carries in its schema metadata the composed `config` (YAML), the `git_commit`, the `packages` "
        "versions (JSON), the `seed` and the `machine` (`pipeline.io.read_provenance(path)` reads them), and, for "
        "every rule of a model's token sequences, the `protocol` (bos | no_bos). Layers are 0-based block indices; "
        "`hook` is the TransformerLens-style name of the tensor. Paths: `results/<model>/<corpus>/<stage>/<config "
        "id>/` (ablate: `ablate/<layers>/<config id>/`). For ViTs, `token` is the layout name (`[CLS]`, `[REG2]`, "
        "`patch 3,5`), `token_id` the position, `seq_id` the image, and `capture/prompt.parquet` holds the first image.",
        "",
        "JSON summaries beside them: `detect/summary.json` (found, message, dims, roles, emerge_layer, "
        "largest_mean_value, largest_ratio, outlier_dims, shared_dims, saturated, k, and the protocol: protocol, "
        "requested, tokenizer_adds_bos, bos_token, warning), `attention/summary.json`, `inference/summary.json`.",
        "",
    ]
    for key, path in schema_files(run).items():
        per, notes = TABLES.get(key, ("", ""))
        schema = pq.read_schema(path)
        lines += [
            f"## `{key}`",
            "",
            f"One row per {per}." if per else "",
            "",
            f"{notes}." if notes else "",
            "",
            "| column | type | report heading |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{f.name}` | {str(f.type).replace('|', chr(92) + '|')} | "
            f"{columns.label(f.name).replace('|', chr(92) + '|') if f.name in columns.COLUMNS else ''} |"
            for f in schema
        ]
        lines.append("")
    return "\n".join(line for line in lines) + "\n"


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=".", help="the working directory of the run (its results/)")
    p.add_argument("--sweep", default="default", help="the sweep's name or YAML path, as given to snakemake")
    p.add_argument(
        "--results-md", default=str(REPO / "docs" / "results.md"), help="where docs/results.md goes ('' : not written)"
    )
    p.add_argument(
        "--readme", default=str(REPO / "README.md"), help="the README whose marked block is filled ('': none)"
    )
    p.add_argument(
        "--schemas", default=str(REPO / "docs" / "schemas.md"), help="where the table schemas go ('': not written)"
    )
    args = p.parse_args(argv)
    outs = {
        k: Path(v).resolve() if v else None
        for k, v in (("md", args.results_md), ("readme", args.readme), ("schemas", args.schemas))
    }
    workdir = Path(args.workdir).resolve()
    if outs["readme"] and not outs["readme"].is_file():
        print(f"error: no README at {outs['readme']}", file=sys.stderr)
        return 2
    if not (workdir / paths.RESULTS).is_dir():
        print(f"error: no {paths.RESULTS}/ in {workdir}: run snakemake there first", file=sys.stderr)
        return 2
    from massive.core.errors import MassiveError

    try:
        run = Run(workdir, args.sweep)
        det_text, det = detection(run)
        if not det:
            print(f"error: no detection results of sweep {args.sweep!r} in {workdir / paths.RESULTS}", file=sys.stderr)
            return 2
        abl_text, abl = ablation(run)
        att_text, att = attention(run)
        ori_text, ori = origins(run)
        inf_text, inf = inference(run)
        train_text, _ = training(run)
        parts = [det_text, abl_text, att_text, ori_text, inf_text, vision(run), train_text, retrofit(run)]
        report = Path(paths.report_file(run.stem, paths.RESULTS))
        if report.is_file():
            parts.append(f"## The report\n\n`{report}`: {report.stat().st_size / 1e6:.2f} MB.\n")
        prov = run.provenance()
        retro = {(m, c): run.table(run.file("retrofit", m, c, "summary.parquet")) for m, c in run.pairs}
        facts = {
            "detect": det,
            "attention": att,
            "origins": ori,
            "inference": inf,
            "retrofit": {k: v for k, v in retro.items() if v is not None},
        }
        doc = header(run, prov) + "\n" + "\n".join(s.rstrip() + "\n" for s in parts if s)
        block = readme_block(run, facts, abl, prov)
        schema_doc = schemas(run) if outs["schemas"] else None
    except MassiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if outs["readme"]:
        text = outs["readme"].read_text()
        outs["readme"].write_text(replace_block(text, block))
    if outs["md"]:
        outs["md"].parent.mkdir(parents=True, exist_ok=True)
        outs["md"].write_text(re.sub(r"\n{3,}", "\n\n", doc))
    if schema_doc is not None:
        outs["schemas"].write_text(re.sub(r"\n{3,}", "\n\n", schema_doc))
    print(
        f"wrote {', '.join(str(v) for v in outs.values() if v)} from {workdir / paths.RESULTS} "
        f"({len(run.used)} tables; machine {'; '.join(prov['machine']) or 'not recorded'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
