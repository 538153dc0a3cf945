"""The emergence metrics of one evaluation: per layer, the residual stream's top-1 and median |a| (at the
first position and the start token), the value states, and the attention sinks."""

from __future__ import annotations

import math

import torch

from massive.core import hooks
from massive.retrain.gpt import GPT


@torch.no_grad()
def emergence(model: GPT, x: torch.Tensor, sink_threshold: float = 0.3) -> list[dict]:
    """Per-layer residual-stream, value-state and attention-sink statistics of `model` on the batch `x`.

    One dict per layer (the residual stream after the block, `blocks.{L}.hook_resid_post`):
      top1_abs, median_abs, first_abs, start_abs  means over sequences of the largest |a|, the median
                      |a|, the largest |a| at position 0 and at the data's start token; their ratios
                      to the median (top1_over_median, first_over_median, start_over_median) and
                      start_over_median_sqrt_d = start_over_median / sqrt(n_embd), a width-free measure
                      of how much one entry dominates the (normalised) start-token vector;
      top1_at_first, top1_at_start  share of sequences whose top-1 entry sits there;
      start_norm_ratio  the start token's L2 norm over the median token's L2 norm;
      start_value_norm, value_norm_median, start_value_ratio  the L2 norm of the start token's value
                      state in this block's attention (mean over heads) and the median over tokens
                      ("value drain", Guo et al. 2024: a sink's value state shrinks while its
                      residual state grows);
      first_attn / first_attn_max  mean / max over heads of the attention later queries
                      (positions >= 1) pay to position 0; slot_attn: on the bias slot;
      sink_heads      share of this layer's heads above `sink_threshold`; sink1: Sink_1 over all heads.

        >>> from massive.retrain.gpt import GPTConfig
        >>> model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, variant="attn_bias"))
        >>> rows = emergence(model, torch.randint(0, 64, (4, 16)), sink_threshold=0.3)
        >>> [r["layer"] for r in rows], 0 <= rows[0]["sink1"] <= 1
        ([0, 1], True)
    """
    c = model.config
    rows: dict[int, dict] = {}

    def keep(layer: int):
        def fn(h: torch.Tensor, _name: str) -> None:
            a = h.detach().float().abs()  # (B, n_prefix + T, C)
            flat = a.flatten(1)
            top1, where = flat.max(dim=1)
            median = flat.median(dim=1).values
            first = a[:, 0].max(dim=1).values
            start = a[:, c.n_prefix].max(dim=1).values
            norms = h.detach().float()[:, c.n_prefix :].norm(dim=-1)  # (B, T): the tokens' L2 norms
            rows[layer] = {
                "top1_abs": top1.mean().item(),
                "median_abs": median.mean().item(),
                "first_abs": first.mean().item(),
                "start_abs": start.mean().item(),
                "top1_at_first": (where // a.shape[-1] == 0).float().mean().item(),
                "top1_at_start": (where // a.shape[-1] == c.n_prefix).float().mean().item(),
                "start_norm_ratio": (norms[:, 0] / norms.median(dim=1).values).mean().item(),
            }

        return fn

    was_training = model.training
    model.eval()
    with hooks.hooked(model, {hooks.resid_post(layer): keep(layer) for layer in range(c.n_layer)}):
        out = model(x, return_attn=True)
    model.train(was_training)
    n_heads = sum(att.shape[1] for att in out.attentions)
    n_sink = 0
    for layer, (att, v) in enumerate(zip(out.attentions, out.values)):  # (B, H, T', n_slot + T'), (B, H, T', hd)
        on_first = att[:, :, 1:, c.n_slot].float().mean(dim=(0, 2))  # per head: later queries -> first position
        on_slot = att[:, :, :, 0].float().mean(dim=(0, 2)) if c.n_slot else torch.zeros_like(on_first)
        sinks = int((on_first > sink_threshold).sum())
        n_sink += sinks
        vnorm = v.float()[:, :, c.n_prefix :].norm(dim=-1).mean(dim=1)  # (B, T): mean over heads
        start_v, median_v = vnorm[:, 0].mean().item(), vnorm.median(dim=1).values.mean().item()
        rows[layer].update(
            {
                "first_attn": on_first.mean().item(),
                "first_attn_max": on_first.max().item(),
                "slot_attn": on_slot.mean().item(),
                "sink_heads": sinks / att.shape[1],
                "start_value_norm": start_v,
                "value_norm_median": median_v,
                "start_value_ratio": start_v / max(median_v, 1e-12),
            }
        )
    out_rows = []
    for layer in sorted(rows):
        r = rows[layer]
        med = max(r["median_abs"], 1e-12)
        out_rows.append(
            {
                "layer": layer,
                **r,
                "top1_over_median": r["top1_abs"] / med,
                "first_over_median": r["first_abs"] / med,
                "start_over_median": r["start_abs"] / med,
                "start_over_median_sqrt_d": r["start_abs"] / med / math.sqrt(c.n_embd),
                "sink1": n_sink / n_heads,
            }
        )
    return out_rows
