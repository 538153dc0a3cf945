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
# They load on first use (PEP 562), so that `import massive` (and the pipeline's config, which
# reads the library's names and defaults) does not import torch: each name maps to its module.
import importlib

_MODULES = ("arch", "errors", "hooks")  # massive.arch is massive.core.arch, and so on
_HOMES = {
    "Comparison": "massive.intervene.comparison",
    "MassiveError": "massive.core.errors",
    "cache": "massive.core.hooks",
    "capture": "massive.measure.capture",
    "chunk_nll": "massive.measure.perplexity",
    "compare": "massive.intervene.comparison",
    "detect": "massive.measure.detect",
    "encode_prompt": "massive.core.sequences",
    "hooked": "massive.core.hooks",
    "intervene": "massive.intervene.interventions",
    "load": "massive.core.models",
    "perplexity": "massive.measure.perplexity",
    "perplexity_chunks": "massive.core.sequences",
    "sequences": "massive.core.sequences",
}

__all__ = sorted(_HOMES)  # the public API, every name as before


# massive.intervene is the function, not the sub-package of the same name: the sub-package is loaded
# here, once, so that no later import of it binds the name (Python binds a package's name in its
# parent when it first loads it), and the name is then left to __getattr__
importlib.import_module("massive.intervene")
del intervene  # noqa: F821 - bound by the import above


def __getattr__(name: str):
    """massive.<name>: the function (or class, or module) from its home module, imported on first use."""
    if name in _MODULES:
        value = importlib.import_module(f"massive.core.{name}")
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'massive' has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES) | set(_MODULES))
