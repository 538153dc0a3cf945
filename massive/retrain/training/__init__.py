"""Train a GPT variant from scratch and watch massive activations emerge (Sun et al. 2024, section 5).

The paper retrains GPT-2 with an explicit attention bias and finds that the massive activations
disappear: with a place for attention to rest, no token needs a huge hidden state to act as the
attention sink. This module trains the variants of `massive.retrain.gpt` (nanoGPT's train.py,
reorganised): AdamW with linear warmup and a cosine (or constant) learning rate, gradient
accumulation, autocast on GPUs, DDP under torchrun. Every `eval_interval` steps it estimates the
train and validation loss and measures, on a FIXED probe batch (`emergence`):
  - per layer, the residual stream after the block (`blocks.{L}.hook_resid_post`): top-1 |a| and
    median |a| per sequence (averaged over sequences, as the paper), and the largest |a| at the
    first position and at the data's start token;
  - per layer and head, the mean attention that later queries (positions >= 1) pay to the first
    position; a head is a sink head when it exceeds `sink_threshold` (Sink_1, Gu et al. 2024).
    For the bias variants the attention on the bias slot is reported beside it (slot_attn).
The first position of the residual stream is the learned sink for `sink_token` and the data's
start token otherwise.

The modules, top to bottom: spec (TrainSpec), batches (the data), optimizer (model, optimizer, learning
rate), devices (device, DDP ranks, autocast), metrics (`emergence`), loop (`train_step`, `evaluate`,
`train`), checkpoints, comparison (`summarise`, `contrast`).

Batches are a function of (seed, split, index), never of a stream position, and a checkpoint
holds the model, the optimizer, the RNG states and the metric rows: a run resumed from it gives
the same next-step losses, bit for bit.

    >>> from massive.retrain import training
    >>> from massive.retrain.backcopy import BackcopySpec
    >>> from massive.retrain.gpt import GPTConfig
    >>> spec = training.TrainSpec(batch_size=8, block_size=16, max_iters=20, warmup_iters=2, eval_interval=10, eval_iters=2)
    >>> model, optimizer = training.build(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32,
    ...                                             variant="attn_bias"), spec, seed=1)
    >>> data = training.BackcopyBatches(BackcopySpec(), seed=1)
    >>> probe, _ = data.batch("probe", 0, 4, 16)
    >>> state = training.train(model, optimizer, data, spec, probe)
    >>> [(r["step"], r["layer"], round(r["slot_attn"], 2)) for r in state["rows"]][-2:]  # doctest: +SKIP"""

from massive.retrain.train_spec import OPTIMIZERS, SCHEDULES, TrainSpec
from massive.retrain.training.batches import DATA, BackcopyBatches, OpenWebTextBatches, OpenWebTextSpec, batches
from massive.retrain.training.checkpoints import load_checkpoint, load_trained, save_checkpoint
from massive.retrain.training.comparison import contrast, summarise
from massive.retrain.training.devices import distributed, init_device, precision
from massive.retrain.training.loop import estimate_loss, evaluate, train, train_step
from massive.retrain.training.metrics import emergence
from massive.retrain.training.optimizer import build, lr_at

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainSpec",
    "DATA",
    "batches",
    "BackcopyBatches",
    "OpenWebTextBatches",
    "OpenWebTextSpec",
    "build",
    "lr_at",
    "distributed",
    "init_device",
    "precision",
    "emergence",
    "estimate_loss",
    "evaluate",
    "train",
    "train_step",
    "load_checkpoint",
    "load_trained",
    "save_checkpoint",
    "contrast",
    "summarise",
]
