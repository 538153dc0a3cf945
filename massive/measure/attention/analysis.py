"""The whole analysis on the calibration sequences (`analyse` -> AttentionResult) and its headline numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm import tqdm

from massive.core.errors import MassiveError
from massive.measure.attention.measures import concentration_layer, decomposition, head_table, layer_table
from massive.measure.attention.recorder import Recorder, device_of, use_recording_attention
from massive.measure.attention.tokens import at, calibration_tokens, random_tokens
from massive.measure.defaults import CONCENTRATE_THRESHOLD, SAMPLE_QUERIES, SINK_THRESHOLD


@dataclass
class AttentionResult:
    """What `analyse` measured on the calibration sequences.

    heads, layers, decomposition: the tables of head_table, layer_table, decomposition;
    concentration: concentration_layer; random_positions: the control's positions; summary: the
    headline numbers (JSON-ready); recorder: holds the calibrated means the interventions use."""

    heads: pd.DataFrame
    layers: pd.DataFrame
    decomposition: pd.DataFrame
    emerge: int | None
    concentration: int | None
    random_positions: list[int]
    summary: dict
    recorder: Recorder = field(repr=False)


def _medians(decomp: pd.DataFrame) -> dict:
    if not len(decomp):
        return {}
    return {p: r.to_dict() for p, r in decomp.groupby("part")[["rel_std", "cos_to_mean"]].median().iterrows()}


def summarise(
    heads: pd.DataFrame,
    layers: pd.DataFrame,
    decomp: pd.DataFrame,
    emerge: int | None,
    concentration: int | None,
    random_positions: list[int],
    explicit_sink: bool = False,
    skipped: dict | None = None,
    notes: list | None = None,
) -> dict:
    """The headline numbers: emerge and concentration layers, Sink_1 share and attention on the
    first token (overall and where the layer's input holds massive activations), decomposition medians.

        >>> summarise(res.heads, res.layers, res.decomposition, 1, 2, [11])["sink_1_share"]
    """
    after = layers[layers["massive_in_input"]] if emerge is not None else layers
    return {
        "emerge_layer": emerge,
        "concentration_layer": concentration,
        "sink_1_share": float(heads["sink"].mean()),
        "sink_1_share_massive_in_input": float(after["sink_1_share"].mean()) if len(after) else None,
        "mass_first_mean": float(layers["mass_first"].mean()),
        "mass_first_massive_in_input": float(after["mass_first"].mean()) if len(after) else None,
        "explicit_sink": bool(
            explicit_sink
        ),  # a learned sink logit per head (gpt-oss `sinks`): its share beside the first token's
        "mass_sink_mean": float(layers["mass_sink"].mean()) if explicit_sink else None,
        "mass_sink_massive_in_input": float(after["mass_sink"].mean()) if explicit_sink and len(after) else None,
        "skipped_layers": {int(k): v for k, v in (skipped or {}).items()},
        "notes": list(notes or []),
        "random_positions": list(random_positions),
        "decomposition_median": _medians(decomp),
        "decomposition_median_massive_in_input": _medians(decomp[decomp["layer"].isin(after["layer"])])
        if len(decomp)
        else {},
    }


def analyse(
    model: torch.nn.Module,
    ids: torch.Tensor,
    massive_tokens: torch.Tensor | pd.DataFrame,
    emerge: int | None = None,
    layer_stats: pd.DataFrame | None = None,
    seq_ids: list[int] | None = None,
    sink_threshold: float = SINK_THRESHOLD,
    concentrate_threshold: float = CONCENTRATE_THRESHOLD,
    sample_queries: int = SAMPLE_QUERIES,
    seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    desc: str = "attention",
) -> AttentionResult:
    """Record attention on the calibration sequences `ids` [n, seq] and measure sinks and the
    decomposition. `massive_tokens`: [n, seq] bool, or detect's massive table (seq_id, position;
    `seq_ids` name the rows of `ids`, 0..n-1 by default). `emerge`: the first block whose output
    holds massive activations (None: none). `layer_stats`: capture's table, for top1_over_median.
    The model is switched to the recording attention (its outputs stay eager's); the inputs go
    to `device` (None: the device of the model's parameters).

        >>> res = analyse(model, ids, found.massive, emerge=found.emerge_layer, seed=1)
        >>> res.summary["concentration_layer"], res.summary["sink_1_share"]
        (2, 0.95)
    """
    use_recording_attention(model)
    device = device or device_of(model)
    if isinstance(massive_tokens, pd.DataFrame):
        massive_tokens = calibration_tokens(
            massive_tokens, list(seq_ids if seq_ids is not None else range(len(ids))), ids.shape[1]
        )
    if tuple(massive_tokens.shape) != tuple(ids.shape):
        raise MassiveError(f"massive_tokens has shape {tuple(massive_tokens.shape)}, the sequences {tuple(ids.shape)}")
    if not massive_tokens.any():
        raise MassiveError("no massive token in any calibration sequence (mark the first token where none is detected)")
    rec = Recorder(model, sample_queries)
    random_pos = random_tokens(massive_tokens, seed)
    random = at(random_pos, len(ids), ids.shape[1], massive_tokens)
    with torch.inference_mode(), rec.active("record"):
        for start in tqdm(range(0, len(ids), batch_size), desc=desc, unit=" batch"):
            rec.massive = massive_tokens[start : start + batch_size].to(device)
            rec.random = random[start : start + batch_size].to(device)
            model(ids[start : start + batch_size].to(device), use_cache=False)
    rec.finish_means()
    heads = head_table(rec, sink_threshold)
    layers = layer_table(heads, emerge, layer_stats)
    concentration = concentration_layer(layers, concentrate_threshold)
    decomp = decomposition(rec)
    positions = random_pos.tolist()
    return AttentionResult(
        heads=heads,
        layers=layers,
        decomposition=decomp,
        emerge=emerge,
        concentration=concentration,
        random_positions=positions,
        recorder=rec,
        summary=summarise(
            heads,
            layers,
            decomp,
            emerge,
            concentration,
            positions,
            explicit_sink=rec.explicit_sink,
            skipped=rec.skipped(),
            notes=[rec.notes[k] for k in sorted(rec.notes)],
        ),
    )
