"""Attention sinks, the implicit attention bias, and its causal test (the paper's Sec. 4).

Massive activations make attention concentrate on their tokens, and what those tokens add to
each attention output (the sum over them of p * v) is nearly the same for every input: an
implicit attention bias. This module measures both on any Hugging Face decoder and tests the
claim by intervention.

How attention is read. Fused kernels do not return probabilities, and log(probs) is no logit
for a masked entry, so the model runs with attn_implementation="massive_eager": an attention
function registered with transformers' AttentionInterface (and the eager mask) that calls the
model family's own `eager_attention_forward` (so the outputs are eager's, bit for bit) and hands
queries, keys, values (after rotary embedding and repeat_kv), the mask, the probabilities and
the output to the active `Recorder`. Without a recorder, or in mode "off", it is plain eager
attention. The recorder's modes:

  off                        nothing (keep=True still keeps every layer's tensors: tests, heatmaps)
  record                     accumulate attention mass and the split of each head's output
                             into the part from the massive-activation tokens and the rest
  replace_massive_with_mean  the massive tokens' part of each output is replaced by its mean
                             over the calibration sequences (per layer, head, query position)
  replace_random_with_mean   the control: the same for random ordinary tokens' part
  replace_other_with_mean    a second control: every other token's part (as large as the massive one)
  replace_massive_with_zero  the reference: the massive tokens' part removed (what the bias is worth)

The massive-activation tokens of a sequence are the positions where detection found a massive
activation in any block (`calibration_tokens` of detect's massive table for the calibration
sequences; `finding_tokens` finds them on the detected dims during the baseline perplexity pass).
Where detection found none, the first token stands in.

The modules, in the order of the analysis: recorder (the recording attention function, the
Recorder), tokens (which tokens are massive), measures (per head and layer, the decomposition),
analysis (`analyse`), intervention (the perplexity test), heatmaps (a prompt's logits).

    >>> from massive.measure import attention
    >>> res = attention.analyse(model, ids, found.massive, emerge=found.emerge_layer)
    >>> res.layers[["layer", "mass_first", "mass_massive", "sink_1_share"]]
    >>> ppl = attention.intervention_perplexities(model, chunks, res, dims=[138, 378], min_abs=100, min_ratio=1000)
"""

from massive.measure.attention.analysis import AttentionResult, analyse, summarise
from massive.measure.attention.heatmaps import heatmap_layers, prompt_logits
from massive.measure.attention.intervention import (
    VARIANTS,
    finding_tokens,
    following,
    intervened_layers,
    intervention_perplexities,
    perplexity_summary,
)
from massive.measure.attention.measures import concentration_layer, decomposition, head_table, layer_table
from massive.measure.attention.recorder import (
    IMPLEMENTATION,
    MODES,
    PARTS,
    REPLACE,
    Recorder,
    Softmaxes,
    eager_of,
    logits,
    massive_eager,
    register,
    repeat_kv,
    use_recording_attention,
)
from massive.measure.attention.tokens import at, calibration_tokens, random_tokens

__all__ = [
    "IMPLEMENTATION",
    "MODES",
    "PARTS",
    "REPLACE",
    "VARIANTS",
    "Recorder",
    "Softmaxes",
    "eager_of",
    "logits",
    "massive_eager",
    "register",
    "repeat_kv",
    "use_recording_attention",
    "at",
    "calibration_tokens",
    "random_tokens",
    "concentration_layer",
    "decomposition",
    "head_table",
    "layer_table",
    "AttentionResult",
    "analyse",
    "summarise",
    "finding_tokens",
    "following",
    "intervened_layers",
    "intervention_perplexities",
    "perplexity_summary",
    "heatmap_layers",
    "prompt_logits",
]
