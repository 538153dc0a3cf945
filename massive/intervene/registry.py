"""The interventions by name, without torch: the names a config may use are known before any
model code is imported (the pipeline checks `ablate.interventions` and `origins.interventions`
at `snakemake -n`).

Activation interventions (massive.intervene.interventions) edit the residual stream at the
massive activations' positions; weight interventions (massive.measure.origins) edit weights.
Each registry is filled by its decorator where the implementation lives; a user's plugin
registers more with the same decorator. The built-in names are listed here, once, so that they
are known without importing the implementations (tests/unit/test_startup.py checks that the
implementations register exactly these).
"""

from __future__ import annotations

from typing import Callable

# ---------------------------------------------------------------- activation interventions
BUILT_IN = ("none", "zero", "mean", "random_zero", "top_zero", "same_token_zero", "fix_register_mean")
INTERVENTIONS: dict[str, Callable] = {}
BEFORE_BLOCKS: set[str] = set()  # applied at the input of every block, with a [batch, seq] mask of positions
LAYER_KEYWORDS = ("emerge", "from_emerge", "all")  # the words of a layers spec (parse_layers); else block indices
LAYER_WORDS = "'emerge', 'from_emerge', 'all'"


def intervention(name: str, before_blocks: bool = False):
    """Register `fn(h, mask, ctx) -> None` as intervention `name` (a decorator).

    >>> @intervention("halve")
    ... def halve(h, mask, ctx):
    ...     h[mask] /= 2
    ...     ctx.changed += int(mask.sum())
    """

    def register(fn):
        INTERVENTIONS[name] = fn
        if before_blocks:
            BEFORE_BLOCKS.add(name)
        return fn

    return register


def intervention_names() -> list[str]:
    """Every activation intervention's name: the built-in ones and those registered so far (plugins)."""
    return sorted(set(BUILT_IN) | set(INTERVENTIONS))


# ---------------------------------------------------------------- weight interventions
KINDS = {
    "none": "baseline",
    "zero_super_weight": "super weight",
    "random_weight": "control",
    "zero_channel": "control",
    "zero_super_weight_restore": "factorial",
    "zero_activation": "factorial",
}  # the built-in weight interventions and what each is in the design
WEIGHT_INTERVENTIONS: dict[str, Callable] = {}
ACTIVATION: dict[str, str] = {}  # intervention -> "restore" | "zero": what it does at the writing block's output


def weight_intervention(name: str, activation: str | None = None):
    """Register `fn(origins, ctx) -> list[Edit]` as weight intervention `name` (a decorator);
    `activation` ("restore" | "zero"): also edit the massive activation at its writing block's output."""

    def register(fn):
        WEIGHT_INTERVENTIONS[name] = fn
        if activation:
            ACTIVATION[name] = activation
        return fn

    return register


def weight_intervention_names() -> list[str]:
    """Every weight intervention's name: the built-in ones, in order, then those registered so far."""
    return [*KINDS, *(name for name in WEIGHT_INTERVENTIONS if name not in KINDS)]
