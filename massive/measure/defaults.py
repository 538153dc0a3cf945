"""The defaults of the measurements whose modules need torch, here without it: the functions take
them as their defaults, and the pipeline's config schema (pipeline/config.py) reads them, so
that composing a config, or `snakemake -n`, never imports torch.
"""

from __future__ import annotations

# massive.measure.capture
# The ladders the capture's exact counts are made at (each pair of min_abs x min_ratio; of outlier_abs x
# outlier_ratio): detection may use any of their pairs without a new capture (massive.measure.capture.Capture.at).
COUNTS = {
    "min_abs": (50.0, 100.0, 200.0),
    "min_ratio": (100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0),
    "outlier_abs": (6.0,),
    "outlier_ratio": (9.0,),
}

# massive.measure.attention.analyse
SINK_THRESHOLD = 0.3  # a Sink_1 head (Gu et al. 2024): mean attention on the first token above this
CONCENTRATE_THRESHOLD = 0.5  # the concentration layer: head-mean attention on the massive tokens above this
SAMPLE_QUERIES = 32  # query positions (second half of the sequence) kept for the decomposition

# massive.measure.origins.find and .perplexities
MIN_SHARE = 0.1  # a later block is listed when a part changes the value by more than this share of it
CHANNEL_SHARE = 0.5  # the down-projection input channels kept make up this share of the MLP's write ...
MAX_CHANNELS = 3  # ... and are at most this many (the first is the super weight)
RANK_BAND = 100  # random_weight: a weight ranked within +- this many of the super weight's |w| rank
