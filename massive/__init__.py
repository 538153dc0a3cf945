"""massive: find, measure, ablate and explain massive activations in Hugging Face transformers
(Sun, Chen, Kolter, Liu, "Massive Activations in Large Language Models", COLM 2024).

The science as plain functions: a model, token ids or pixel values, thresholds and a seed in;
dataclasses and DataFrames out. No Hydra, no W&B, no files (except where loading is the job).

    import massive
    model, tok = massive.load("HuggingFaceTB/SmolLM2-135M")        # hub id, local dir or .gguf
    ids = massive.sequences(tok, texts, seq_len=256, n=16, seed=1)  # the pipeline's protocol
    stats = massive.capture(model, ids, k=64)                       # layer_stats, topk, dim_max
    found = massive.detect(stats, min_abs=100, min_ratio=1000)      # summary, per_layer, massive
    with massive.intervene(model, found, "mean", layers="emerge"):
        ppl = massive.perplexity(model, chunks)
    cmp = massive.compare(model, chunks, {"none": None, "zero": lambda: massive.intervene(model, found, "zero")})
    cmp.table                                                       # ratio to none, ratio_lo, ratio_hi, verdict

Submodules: errors, arch, hooks, sequences, models, wheels, corpora, capture, detect, interventions,
perplexity, comparison (conditions against a baseline: bootstrap intervals, verdicts), ablation,
regrowth, origins, precision, quantize, window, attention,
images, vision, zeroshot, gpt, backcopy, training, plots, interactive.
"""

from __future__ import annotations

# The functions below share their names with the modules that define them (massive.capture is
# the function; its module is massive.capture's home: `from massive.capture import Capture`).
# They are imported here, once, so that the name always means the function.
from massive.core import arch, errors, hooks  # noqa: F401
from massive.core.errors import MassiveError
from massive.core.hooks import cache, hooked
from massive.core.models import load
from massive.core.sequences import encode_prompt, perplexity_chunks, sequences
from massive.intervene.comparison import Comparison, compare
from massive.intervene.interventions import intervene
from massive.measure.capture import capture
from massive.measure.detect import detect
from massive.measure.perplexity import chunk_nll, perplexity

__all__ = [
    "Comparison",
    "MassiveError",
    "cache",
    "capture",
    "chunk_nll",
    "compare",
    "detect",
    "encode_prompt",
    "hooked",
    "intervene",
    "load",
    "perplexity",
    "perplexity_chunks",
    "sequences",
]
