"""Quickstart: find the massive activations of a language model, test what they do, plot them.

Sun, Chen, Kolter, Liu, "Massive Activations in Large Language Models" (COLM 2024), in one
script of plain function calls: no Hydra, no Snakemake. It reads the model and the texts and writes
nothing, unless --out names a file for the figure. Read it top to bottom, or paste it into a
notebook cell by cell.

  python examples/quickstart.py                      # the pipeline's cached SmolLM2-135M (run snakemake first)
  python examples/quickstart.py --model HuggingFaceTB/SmolLM2-135M --texts my_corpus.txt --out fig.png
"""

from __future__ import annotations

import argparse

import pandas as pd

import massive
from massive.data.corpora import text_documents
from massive.plots import figures as plots

parser = argparse.ArgumentParser(description="find, test and plot the massive activations of a language model")
parser.add_argument(
    "--model", default="cache/models/smollm2_135m/hf", help="a Hugging Face directory, hub id or .gguf file"
)
parser.add_argument(
    "--texts",
    default="cache/corpora/wiki_sample.parquet",
    help="documents: a Parquet file with a `text` column, or a text file (documents separated by blank lines)",
)
parser.add_argument("--out", default=None, help="save the layerwise figure there (default: no file is written)")
parser.add_argument("--seq-len", type=int, default=256)
parser.add_argument("--n", type=int, default=16, help="sequences to capture")
args = parser.parse_args()

# 1. The model and its tokenizer (float32, on the CPU; device="auto" puts it on a GPU).
model, tok = massive.load(args.model)

# 2. Token sequences, by the paper's protocol: documents sampled with a seed, joined by blank
#    lines, tokenised once, cut into n consecutive chunks of seq_len tokens.
if args.texts.endswith(".parquet"):
    docs = pd.read_parquet(args.texts, columns=["text"])["text"].tolist()
else:
    docs = text_documents(args.texts)
ids = massive.sequences(tok, docs, seq_len=args.seq_len, n=args.n, seed=1)
print(f"{len(ids)} sequences x {ids.shape[1]} tokens")

# 3. Capture: hooks at every block's output (blocks.L.hook_resid_post) keep the top-64 |a| of
#    each sequence with their positions, dims and tokens, and the median |a|. Nothing else is
#    kept, and the logits are those of a plain forward pass.
stats = massive.capture(model, ids, k=64, tok=tok)

# 4. Detect: an entry is massive when |a| > 100 and > 1000x the median |a| of its layer.
found = massive.detect(stats, min_abs=100, min_ratio=1000)
print(found.result["message"])


def num(v: float) -> str:
    """Whole numbers from 100 up (thousands separated), 3 significant digits below: 24,523, 108, 1.82."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


# The per-layer statistics around the block where they emerge (or the largest ratio), first and last block.
per_layer = stats.per_layer().set_index("layer")
at = found.emerge_layer if found.found else int(per_layer["top1_over_median"].idxmax())
last = int(per_layer.index.max())
shown = sorted({0, max(at - 1, 0), at, min(at + 1, last), last})
print(" block   median |a|   top-1 |a|   top-1 / median")
for i, layer in enumerate(shown):
    if i and layer != shown[i - 1] + 1:
        print("   ...")
    r = per_layer.loc[layer]
    print(f"{layer:>6} {num(r['median_abs']):>12} {num(r['top1_abs']):>11} {num(r['top1_over_median']):>16}")

# 5. Intervene, and measure what it does to perplexity: set the massive activations to zero, or
#    to their mean, at the block where they emerge (the paper's Table 2).
chunks = massive.perplexity_chunks(tok, docs, seq_len=args.seq_len, max_chunks=16)
print(f"perplexity, {len(chunks)} chunks x {chunks.shape[1]} tokens:")
ppl_text = lambda v: f"{v:,.2f}" if v < 1000 else f"{v:,.0f}"  # noqa: E731 - 2 decimals, whole numbers from 1,000
print(f"  none  {ppl_text(massive.perplexity(model, chunks).value):>10}")
if found.found:
    for name in ("zero", "mean"):
        with massive.intervene(model, found, name, layers="emerge", tokenizer=tok) as ctx:
            ppl = massive.perplexity(model, chunks)
        print(
            f"  {name:<5} {ppl_text(ppl.value):>10}   ({ctx.changed} entries changed after block {found.emerge_layer})"
        )

# 6. One figure: top-1/2/3 and median |a| per layer (the paper's Fig. 2); saved only where asked.
fig = plots.layerwise(stats.layer_stats, f"{args.model}: |a| per layer")
if args.out:
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"figure: {args.out}")
else:
    print("figure: not saved (--out fig.png saves it)")
