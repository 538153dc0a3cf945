"""What an ablation table says: per model and corpus, zeroing's verdict at each layers value swept,
whether the zeroed activations come back downstream, and where zeroing hurts most.

The numbers come from massive.compare (massive/intervene/comparison.py): per-chunk NLL under each
intervention, the ratio to none with its paired bootstrap interval, and the verdict.

    >>> [r.zero[0]["verdict"] for r in readings(table, regrowth, 0.5)]
    ['harmful', 'harmful']
"""

from __future__ import annotations

from dataclasses import dataclass


# ---------------------------------------------------------------- reading the evidence
@dataclass
class Reading:
    """What one model on one corpus says: zeroing at each layers value swept (layers, blocks,
    where: in words, verdict, ratio, ratio_lo, ratio_hi, n_chunks, regrowth: massive.measure.regrowth.Regrowth
    or None), and the layers value where zeroing hurts most (None unless several were swept; its
    `distinct`: whether its interval lies above every other one's)."""

    model: str
    corpus: str
    dims: str
    zero: list[dict]
    worst: dict | None


def where(layers: str, blocks: str) -> str:
    """An intervention's blocks in words.

    >>> where("emerge", "11"), where("from_emerge", "11,12,13"), where("2_3", "2,3")
    ('at block 11 (emerge)', 'at every block from 11 on (from_emerge)', 'at blocks 2,3')
    """
    bs = [b for b in str(blocks).split(",") if b]
    if not bs:
        return f"(layers {layers}: no block)"
    if layers == "from_emerge":
        return f"at every block from {bs[0]} on (from_emerge)"
    if len(bs) == 1:
        return f"at block {bs[0]}" + (f" ({layers})" if not layers[0].isdigit() else "")
    return f"at blocks {','.join(bs)}" + (f" ({layers})" if not layers[0].isdigit() else "")


def readings(table, regrowth, threshold: float = 0.5) -> list[Reading]:
    """One Reading per (model, corpus) of an ablation table (columns model, corpus, layers, blocks,
    dims, intervention, ratio, ratio_lo, ratio_hi, n_chunks, verdict) and its regrowth
    table (massive.measure.regrowth.table with model, corpus, layers columns); `threshold`: the share of
    their unablated size at which zeroed activations count as back.

        >>> [r.zero[0]["verdict"] for r in readings(table, regrowth, 0.5)]
        ['harmful', 'harmful']
    """
    from massive.measure.regrowth import comes_back

    out = []
    for (model, corpus), g in table.groupby(["model", "corpus"], sort=False):
        zeros = []
        for layers, run in g.groupby("layers", sort=False):
            z = run[run["intervention"] == "zero"]
            if z.empty:
                continue
            row = z.iloc[0]
            rg = regrowth[
                (regrowth["model"] == model) & (regrowth["corpus"] == corpus) & (regrowth["layers"] == layers)
            ]
            zeros.append(
                {
                    "layers": layers,
                    "blocks": row["blocks"],
                    "where": where(layers, row["blocks"]),
                    "verdict": row["verdict"],
                    "ratio": float(row["ratio"]),
                    "ratio_lo": float(row["ratio_lo"]),
                    "ratio_hi": float(row["ratio_hi"]),
                    "n_chunks": int(row["n_chunks"]),
                    "regrowth": comes_back(rg, "zero", threshold),
                }
            )
        found = [z for z in zeros if z["verdict"] != "none found"]
        worst = dict(max(found, key=lambda z: z["ratio"])) if len(found) > 1 else None
        if worst is not None:  # is it worse than every other beyond their intervals?
            worst["distinct"] = all(z["ratio_hi"] < worst["ratio_lo"] for z in found if z["layers"] != worst["layers"])
        out.append(Reading(model, corpus, str(g["dims"].iloc[0]), zeros, worst))
    return out
