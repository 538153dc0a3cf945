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

Submodules: errors, arch, hooks, sequences, models, corpora, capture, detect, interventions,
perplexity, attention, images, zeroshot, gpt, backcopy, training, plots.
"""

from __future__ import annotations

import importlib

# public name -> (submodule, attribute); imported on first use, so `import massive` stays cheap
_API = {
    "MassiveError": ("errors", "MassiveError"),
    "load": ("models", "load"),
    "sequences": ("sequences", "sequences"),
    "perplexity_chunks": ("sequences", "perplexity_chunks"),
    "encode_prompt": ("sequences", "encode_prompt"),
    "hooked": ("hooks", "hooked"),
    "cache": ("hooks", "cache"),
    "capture": ("capture", "capture"),
    "detect": ("detect", "detect"),
    "intervene": ("interventions", "intervene"),
    "perplexity": ("perplexity", "perplexity"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(f"massive.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'massive' has no attribute {name!r}")
