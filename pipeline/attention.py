"""Rule attention: attention sinks, the implicit attention bias, and its causal test.

Massive activations make attention concentrate on their tokens, and what those tokens add to
each attention output (the sum over them of p * v) is nearly the same for every input: an
implicit attention bias. This rule measures both on any Hugging Face decoder and tests the claim
by intervention.

How attention is read. Fused kernels do not return probabilities, and log(probs) is no logit
for a masked entry, so the model is loaded with attn_implementation="massive_eager": an
attention function registered with transformers' AttentionInterface (and the eager mask) that
calls the model family's own `eager_attention_forward` (so the outputs are eager's, bit for bit)
and hands queries, keys, values (after rotary embedding and repeat_kv), the mask, the
probabilities and the output to the active `Recorder`. Without a recorder, or in mode "off", it
is plain eager attention. The recorder's modes:
  off                        nothing (keep=True still keeps every layer's tensors: tests, heatmaps)
  record                     accumulate attention mass and the split of each head's output
                             into the part from the massive-activation tokens and the rest
  replace_massive_with_mean  the massive tokens' part of each output is replaced by its mean
                             over the calibration sequences (per layer, head, query position)
  replace_random_with_mean   the control: the same for random ordinary tokens' part
  replace_other_with_mean    a second control: every other token's part (as large as the massive one)
  replace_massive_with_zero  the reference: the massive tokens' part removed (what the bias is worth)

The massive-activation tokens of a sequence are the positions where detection found a massive
activation in any block (detect/massive.parquet for the capture's sequences; the same rule,
interventions.massive_mask on the detected dims, during the baseline pass for the perplexity
chunks). Where detection found none, the first token stands in.

Outputs in results/<model>/<corpus>/attention/:
  heads.parquet          (layer, head): mean attention that queries at positions >= 1 put on
                         the first token, on the massive tokens, on the rest; sink (Sink_1 head:
                         mass on the first token > sink_threshold, Gu et al. 2024)
  layers.parquet         per layer: head means of the above, the Sink_1 share of heads, whether
                         the layer's input holds massive activations, top-1 |a| / median |a|
  decomposition.parquet  (layer, head, part in massive|other|random): how constant the part is
                         across sequences at the same query position: rel_std (RMS deviation
                         from the mean / RMS norm of the mean) and cos_to_mean
  perplexity.parquet     variant none | massive_mean | random_mean | other_mean | massive_zero
  heatmaps.png           head-mean attention logits for capture.prompt at a few layers (Fig. 5)
  sink_curve.png         per-layer attention on the massive tokens next to top-1 / median |a|
  summary.json           concentration layer, Sink_1 share, perplexities, decomposition medians
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pipeline import cli, tracking  # noqa: E402
from pipeline.ablate import eval_chunks, perplexity  # noqa: E402
from pipeline.capture import block_hooks  # noqa: E402
from pipeline.cli import PipelineError  # noqa: E402
from pipeline.interventions import massive_mask  # noqa: E402
from pipeline.io import atomic_path, read_table, root, run_dir, tokens_file, write_json, write_table  # noqa: E402
from pipeline.model import find_parts, load_model, load_tokenizer, pick_device  # noqa: E402
from pipeline.tokenize import check_seq_len  # noqa: E402

log = logging.getLogger(__name__)
IMPLEMENTATION = "massive_eager"
# replace mode -> (the part it replaces, by what)
REPLACE = {"replace_massive_with_mean": ("massive", "mean"), "replace_random_with_mean": ("random", "mean"),
           "replace_other_with_mean": ("other", "mean"), "replace_massive_with_zero": ("massive", "zero")}
MODES = ("off", "record", *REPLACE)
PARTS = ("massive", "other", "random")
VARIANTS = {"none": "off", "massive_mean": "replace_massive_with_mean", "random_mean": "replace_random_with_mean",
            "other_mean": "replace_other_with_mean", "massive_zero": "replace_massive_with_zero"}


# ---------------------------------------------------------------- config
from pipeline.config import AttentionConfig  # noqa: E402  (the schema of cfg.attention)


def settings(cfg: DictConfig) -> AttentionConfig:
    """cfg.attention over the defaults (`++attention.key=value` works with or without it in the schema)."""
    node = cfg.get("attention") if "attention" in cfg else None
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    known = {f.name for f in fields(AttentionConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(f"unknown key attention.{unknown[0]} (known: {', '.join(sorted(known))})")
    s = AttentionConfig(**values)
    if s.num_sequences < 1:
        raise PipelineError(f"attention.num_sequences={s.num_sequences} must be at least 1")
    if s.intervene_layers not in ("massive", "all"):
        raise PipelineError(f"attention.intervene_layers={s.intervene_layers!r} is not 'massive' or 'all'")
    return s


# ---------------------------------------------------------------- the recording attention function
_ACTIVE: list["Recorder"] = []  # the recorder of the running forward pass (a stack: innermost wins)
_EAGER: dict[type, callable] = {}


def eager_of(module: torch.nn.Module):
    """The model family's own eager attention function (llama's where the family has none)."""
    cls = type(module)
    if cls not in _EAGER:
        fn = getattr(sys.modules[cls.__module__], "eager_attention_forward", None)
        if fn is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward as fn
        _EAGER[cls] = fn
    return _EAGER[cls]


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[batch, kv_heads, seq, d] -> [batch, kv_heads * groups, seq, d] (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def massive_eager(module, query, key, value, attention_mask, **kwargs):
    """Eager attention, observed (and in the replace modes, edited) by the active recorder."""
    out, probs = eager_of(module)(module, query, key, value, attention_mask, **kwargs)
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is None or (rec.mode == "off" and not rec.keep):
        return out, probs
    return rec.observe(module, query, key, value, attention_mask, probs, out, kwargs), probs


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, massive_eager)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def use_recording_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch a loaded model to the recording attention (the outputs stay eager's)."""
    register()
    model.set_attn_implementation(IMPLEMENTATION)
    return model


class Recorder:
    """What the recording attention function does with each layer's attention."""

    def __init__(self, model: torch.nn.Module, sample_queries: int = 32):
        attentions = find_parts(model).attentions
        self.layer_of = {id(m): i for i, m in enumerate(attentions)}
        self.n_layers = len(attentions)
        self.mode = "off"
        self.keep = False  # keep every layer's logits, probs, values, output (and parts when recording)
        self.kept: dict[int, dict[str, torch.Tensor]] = {}
        self.massive: torch.Tensor | None = None  # [batch, seq] bool: the massive tokens of this batch
        self.random: torch.Tensor | None = None  # [batch, seq] bool: the control's random tokens
        self.layers: set[int] = set(range(self.n_layers))  # where the replace modes act
        self.sample_queries = sample_queries
        self.mass: dict[int, list[torch.Tensor]] = defaultdict(list)  # layer -> [[batch, heads, 2]]: first, massive
        self.sums: dict[tuple[str, int], torch.Tensor] = {}  # (part, layer) -> [heads, seq, d] float64
        self.count = 0  # sequences recorded (counted once per batch, at layer 0)
        self.samples: dict[tuple[str, int], list[torch.Tensor]] = defaultdict(list)  # [batch, heads, queries, d]
        self.means: dict[tuple[str, int], torch.Tensor] = {}

    @contextmanager
    def active(self, mode: str = "record", keep: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown recorder mode {mode!r} (known: {', '.join(MODES)})")
        self.mode, self.keep = mode, keep
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)
            self.mode, self.keep = "off", False

    def part(self, probs: torch.Tensor, values: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """sum over the key positions in `keys` ([batch, seq] bool) of p * v: [batch, heads, queries, d]."""
        mask = keys[:, None, None, : probs.shape[-1]].to(torch.float32)
        return torch.matmul(probs.float() * mask, values.float())

    def observe(self, module, query, key, value, attention_mask, probs, out, kwargs) -> torch.Tensor:
        layer = self.layer_of.get(id(module), getattr(module, "layer_idx", None))
        values = repeat_kv(value, query.shape[1] // value.shape[1])
        if self.keep:
            self.kept[layer] = {"probs": probs.detach().clone(), "values": values.detach().clone(),
                                "output": out.detach().transpose(1, 2).clone(),
                                **logits(query, repeat_kv(key, query.shape[1] // key.shape[1]), attention_mask, kwargs)}
        if self.mode == "record":
            self.record(layer, probs, values)
        elif self.mode != "off" and layer in self.layers:
            kind, by = REPLACE[self.mode]
            keys = {"massive": self.massive, "random": self.random, "other": ~self.massive}[kind]
            part = self.part(probs, values, keys)
            if by == "zero":
                new = torch.zeros_like(part)
            else:
                new = self.means[(kind, layer)][:, : part.shape[2]].to(part.device)
            # out + (new - part): with one calibration sequence, mean == part and out is unchanged, bit for bit
            out = (out.float() + (new - part).transpose(1, 2)).to(out.dtype)
        return out

    def record(self, layer: int, probs: torch.Tensor, values: torch.Tensor) -> None:
        massive = self.massive[:, : probs.shape[-1]]
        parts = {"massive": self.part(probs, values, massive), "other": self.part(probs, values, ~massive),
                 "random": self.part(probs, values, self.random)}
        p = probs.float()[:, :, 1:]  # queries at positions >= 1 (position 0 can only see itself)
        first = p[..., 0].mean(-1)
        on_massive = (p * massive[:, None, None, :].float()).sum(-1).mean(-1)
        self.mass[layer].append(torch.stack([first, on_massive], dim=-1).cpu())
        t = probs.shape[2]
        queries = torch.linspace(t // 2, t - 1, min(self.sample_queries, t - t // 2)).round().long().unique()
        for name, x in parts.items():
            s = x.sum(0).double().cpu()
            self.sums[(name, layer)] = s if (name, layer) not in self.sums else self.sums[(name, layer)] + s
            self.samples[(name, layer)].append(x[:, :, queries].cpu())
        if self.keep:
            self.kept[layer]["parts"] = {name: x.detach().clone() for name, x in parts.items()}
        if layer == 0:
            self.count += probs.shape[0]

    def finish_means(self) -> None:
        """The mean over the recorded sequences of each part, per layer, head and query position."""
        self.means = {k: (s / self.count).float() for k, s in self.sums.items()}


def logits(query: torch.Tensor, keys: torch.Tensor, attention_mask: torch.Tensor | None, kwargs: dict) -> dict:
    """QK^T * scaling (soft-capped where the model does), -inf where the mask hides a key."""
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    scores = torch.matmul(query.float(), keys.float().transpose(2, 3)) * scaling
    if kwargs.get("softcap"):
        scores = torch.tanh(scores / kwargs["softcap"]) * kwargs["softcap"]
    t, k = scores.shape[-2:]
    if attention_mask is None:
        visible = torch.ones(t, k, dtype=torch.bool, device=scores.device).tril(k - t)[None, None]
    elif attention_mask.dtype == torch.bool:
        visible = attention_mask[..., :k]
    else:
        visible = attention_mask[..., :k] == 0
    visible = visible.expand_as(scores)
    return {"logits": scores.masked_fill(~visible, float("-inf")), "visible": visible}


# ---------------------------------------------------------------- which tokens are massive
def detected(det_dir) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    result = json.loads((det_dir / "summary.json").read_text())
    return result, read_table(det_dir / "summary.parquet"), read_table(det_dir / "massive.parquet")


def calibration_tokens(massive: pd.DataFrame, seq_ids: list[int], seq_len: int) -> torch.Tensor:
    """[sequences, seq_len] bool: where detection found a massive activation in any block."""
    mask = torch.zeros(len(seq_ids), seq_len, dtype=torch.bool)
    if massive.empty:
        mask[:, 0] = True  # nothing detected: the first token stands in
        return mask
    where = massive.groupby("seq_id")["position"].unique()
    for i, s in enumerate(seq_ids):
        if s in where.index:
            mask[i, torch.as_tensor(where[s].astype(np.int64))] = True
    return mask


def random_tokens(massive: torch.Tensor, seed: int) -> torch.Tensor:
    """Control positions: as many as the massive tokens per sequence (on average, at least one),
    drawn once (seeded) in the first half among positions massive in no calibration sequence."""
    t = massive.shape[1]
    k = max(1, round(massive.sum(1).float().mean().item()))
    pool = [p for p in range(1, max(2, t // 2)) if not massive[:, p].any()]
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist()), dtype=torch.long)


def at(positions: torch.Tensor, n: int, t: int, exclude: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[:, positions[positions < t]] = True
    return mask & ~exclude


# ---------------------------------------------------------------- measures
def head_table(rec: Recorder, sink_threshold: float) -> pd.DataFrame:
    rows = []
    for layer in range(rec.n_layers):
        m = torch.cat(rec.mass[layer]).mean(0)  # [heads, 2], mean over sequences
        for h in range(m.shape[0]):
            first, massive = float(m[h, 0]), float(m[h, 1])
            rows.append({"layer": layer, "head": h, "mass_first": first, "mass_massive": massive,
                         "mass_other": 1.0 - massive, "sink": first > sink_threshold})
    return pd.DataFrame(rows)


def layer_table(heads: pd.DataFrame, emerge: int | None, layer_stats: pd.DataFrame | None) -> pd.DataFrame:
    out = heads.groupby("layer", as_index=False).agg(mass_first=("mass_first", "mean"), mass_massive=("mass_massive", "mean"),
                                                     mass_other=("mass_other", "mean"), sink_1_share=("sink", "mean"),
                                                     n_sink_heads=("sink", "sum"), max_head_mass_first=("mass_first", "max"))
    out["massive_in_input"] = out["layer"] > emerge if emerge is not None else False  # block L reads block L-1's output
    if layer_stats is not None:
        agg = layer_stats.groupby("layer")[["top1_abs", "median_abs"]].mean()
        out["top1_over_median"] = out["layer"].map(agg["top1_abs"] / agg["median_abs"])
    return out


def concentration_layer(layers: pd.DataFrame, threshold: float) -> int | None:
    above = layers.loc[layers["mass_massive"] > threshold, "layer"]
    return int(above.iloc[0]) if len(above) else None


def decomposition(rec: Recorder) -> pd.DataFrame:
    """How constant each part is across sequences, at the same query position."""
    rows = []
    for (name, layer), chunks in sorted(rec.samples.items(), key=lambda kv: (kv[0][1], PARTS.index(kv[0][0]))):
        x = torch.cat(chunks).double()  # [sequences, heads, queries, d]
        mean = x.mean(0, keepdim=True)
        dev = (x - mean).pow(2).sum(-1).mean(dim=(0, 2)).sqrt()  # RMS over sequences and queries: [heads]
        scale = mean.pow(2).sum(-1).mean(dim=(0, 2)).sqrt()
        cos = torch.nn.functional.cosine_similarity(x, mean.expand_as(x), dim=-1).mean(dim=(0, 2))
        norm = x.norm(dim=-1).mean(dim=(0, 2))
        for h in range(x.shape[1]):
            rows.append({"layer": layer, "head": h, "part": name, "norm": float(norm[h]),
                         "rel_std": float(dev[h] / scale[h]) if scale[h] > 0 else float("nan"),
                         "cos_to_mean": float(cos[h]), "n_sequences": x.shape[0]})
    return pd.DataFrame(rows)


@contextmanager
def following(model, chunks: torch.Tensor, on_batch):
    """Call on_batch(start, n) before each forward pass of `model` over chunks[start : start + n],
    the chunks being passed in order (as ablate.perplexity does); any other input is an error."""
    at_ = {"start": 0}

    def pre(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        start, n = at_["start"], len(ids)
        if not torch.equal(ids.cpu(), chunks[start : start + n]):
            raise RuntimeError(f"forward pass over an unexpected batch (expected chunks {start}..{start + n - 1})")
        on_batch(start, n)
        at_["start"] += n

    handle = model.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def chunk_tokens(model, chunks: torch.Tensor, batch_size: int, device, dims: list[int], min_abs: float,
                 min_ratio: float) -> tuple[torch.Tensor, tuple[float, int]]:
    """The baseline perplexity pass, which also finds the chunks' massive tokens: [chunks, seq] bool,
    where a detected dim is massive in any block."""
    found = torch.zeros(chunks.shape, dtype=torch.bool)
    batch = {"start": 0, "n": 0}

    def see(_layer, h):
        if dims:
            found[batch["start"] : batch["start"] + batch["n"]] |= massive_mask(h, dims, min_abs, min_ratio).any(-1).cpu()

    with following(model, chunks, lambda start, n: batch.update(start=start, n=n)), block_hooks(model, see):
        ppl = perplexity(model, chunks, batch_size, device)
    if not dims:
        found[:, 0] = True  # nothing detected: the first token stands in
    return found, ppl


# ---------------------------------------------------------------- figures
def save(fig, path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def auto_heatmap_layers(emerge: int | None, n_layers: int) -> list[int]:
    if emerge is None:
        picks = [0, n_layers // 2, n_layers - 1]
    else:  # block `emerge` still reads no massive activation; block emerge + 1 is the first to
        first = min(emerge + 1, n_layers - 1)
        picks = [emerge, first, (first + n_layers - 1) // 2]
    return sorted(set(picks))


def heatmaps(kept: dict, layers: list[int], tokens: list[str], emerge: int | None, title: str):
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.4), squeeze=False)
    labels = [repr(t)[1:-1] for t in tokens]
    for ax, layer in zip(axes[0], layers):
        lg = kept[layer]["logits"][0].mean(0)  # head mean of the visible logits [queries, keys]
        lg = torch.where(torch.isfinite(lg), lg, torch.tensor(float("nan"))).numpy()
        im = ax.imshow(lg, cmap="coolwarm", interpolation="nearest")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        held = "yes" if emerge is not None and layer > emerge else "no"
        ax.set_title(f"layer {layer} (massive in input: {held})", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{title}: attention logits, mean over heads", fontsize=9)
    fig.tight_layout()
    return fig


def sink_curve(layers: pd.DataFrame, emerge: int | None, concentration: int | None, title: str):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.plot(layers["layer"], layers["mass_first"], "o-", ms=3, label="on first token")
    a.plot(layers["layer"], layers["mass_massive"], "s--", ms=3, label="on massive tokens")
    a.plot(layers["layer"], layers["sink_1_share"], "^:", ms=3, label="Sink_1 share of heads")
    a.set_ylim(-0.02, 1.02)
    a.set_xlabel("layer (attention of block L)")
    a.set_ylabel("mean attention (queries >= 1)")
    if concentration is not None:
        a.axvline(concentration, color="grey", ls="--", lw=0.8, label=f"concentration (layer {concentration})")
    if emerge is not None:
        a.axvline(emerge + 0.5, color="C3", ls=":", lw=0.8, label=f"massive from block {emerge}'s output")
    a.legend(frameon=False, fontsize=7)
    a.grid(alpha=0.3)
    if "top1_over_median" in layers:
        b.plot(layers["layer"], layers["top1_over_median"], "o-", ms=3, color="C3")
        b.set_yscale("log")
    b.set_xlabel("layer (blocks.L.hook_resid_post)")
    b.set_ylabel("top-1 |a| / median |a|")
    if emerge is not None:
        b.axvline(emerge, color="C3", ls=":", lw=0.8)
    b.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the rule
def run(cfg: DictConfig) -> None:
    s = settings(cfg)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    result, summary, massive = detected(run_dir(cfg, "detect"))
    emerge = result.get("emerge_layer") if result.get("found") else None
    dims = sorted(summary["dim"].unique().tolist())
    tokens = read_table(tokens_file(cfg)).iloc[: s.num_sequences]
    ids = torch.tensor(np.stack(tokens["input_ids"].to_numpy()), dtype=torch.long)
    layer_stats_path = run_dir(cfg, "capture") / "layer_stats.parquet"
    layer_stats = read_table(layer_stats_path) if layer_stats_path.exists() else None

    register()
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device, attn_implementation=IMPLEMENTATION)
    rec = Recorder(model, s.sample_queries)
    n_layers = rec.n_layers
    rec.layers = set(range(n_layers)) if s.intervene_layers == "all" or emerge is None else set(range(emerge + 1, n_layers))

    # 1-3: record attention on the calibration sequences
    cal_massive = calibration_tokens(massive, tokens["seq_id"].tolist(), ids.shape[1])
    random_pos = random_tokens(cal_massive, cfg.seed)
    cal_random = at(random_pos, len(ids), ids.shape[1], cal_massive)
    bs = cfg.capture.batch_size
    with torch.inference_mode(), rec.active("record"):
        for start in tqdm(range(0, len(ids), bs), desc=f"attention {cfg.model.name}/{cfg.data.name}", unit=" batch"):
            rec.massive = cal_massive[start : start + bs].to(device)
            rec.random = cal_random[start : start + bs].to(device)
            model(ids[start : start + bs].to(device), use_cache=False)
    rec.finish_means()
    heads = head_table(rec, s.sink_threshold)
    layers = layer_table(heads, emerge, layer_stats)
    concentration = concentration_layer(layers, s.concentrate_threshold)
    decomp = decomposition(rec)

    # figures: logits for the prompt
    prompt_ids = tok(cfg.capture.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode(), rec.active("off", keep=True):
        model(prompt_ids.to(device), use_cache=False)
    hm_layers = list(s.heatmap_layers) if s.heatmap_layers is not None else auto_heatmap_layers(emerge, n_layers)
    bad = [x for x in hm_layers if not 0 <= x < n_layers]
    if bad:
        raise PipelineError(f"attention.heatmap_layers: layer {bad[0]} is outside 0..{n_layers - 1}")
    name = f"{cfg.model.name} on {cfg.data.name}"
    kept = {layer: {"logits": v["logits"].cpu()} for layer, v in rec.kept.items()}
    rec.kept = {}
    figs = {"heatmaps": heatmaps(kept, hm_layers, [tok.decode([int(i)]) for i in prompt_ids[0]], emerge,
                                 f"{cfg.model.name}: {cfg.capture.prompt!r}"),
            "sink_curve": sink_curve(layers, emerge, concentration, name)}

    # 4: the intervention, on the perplexity chunks
    seq_len = check_seq_len(cfg)
    if seq_len > ids.shape[1]:
        raise PipelineError(f"seq_len={seq_len} is longer than the calibration sequences ({ids.shape[1]} tokens)")
    chunks = eval_chunks(cfg, tok, seq_len)
    with torch.inference_mode():
        chunk_massive, (base, n_tokens) = chunk_tokens(model, chunks, cfg.ablate.batch_size, device, dims,
                                                       cfg.detect.min_abs, cfg.detect.min_ratio)
    chunk_random = at(random_pos, len(chunks), seq_len, chunk_massive)
    rows = [{"variant": "none", "perplexity": base}]
    for variant in [v for v in VARIANTS if v != "none"]:
        def on_batch(start, n):
            rec.massive = chunk_massive[start : start + n].to(device)
            rec.random = chunk_random[start : start + n].to(device)

        with torch.inference_mode(), rec.active(VARIANTS[variant]), following(model, chunks, on_batch):
            ppl, _ = perplexity(model, chunks, cfg.ablate.batch_size, device)
        rows.append({"variant": variant, "perplexity": ppl})
    ppl_table = pd.DataFrame(rows)
    ppl_table["ratio_to_none"] = ppl_table["perplexity"] / base
    ppl_table["n_tokens"], ppl_table["n_chunks"] = n_tokens, len(chunks)
    ppl_table["intervened_layers"] = ",".join(map(str, sorted(rec.layers)))

    out = run_dir(cfg, "attention")
    write_table(heads, out / "heads.parquet", cfg)
    write_table(layers, out / "layers.parquet", cfg)
    write_table(decomp, out / "decomposition.parquet", cfg)
    write_table(ppl_table, out / "perplexity.parquet", cfg)
    for key, fig in figs.items():
        save(fig, out / f"{key}.png", cfg.figures.dpi)
    after = layers[layers["massive_in_input"]] if emerge is not None else layers
    med = decomp.groupby("part")[["rel_std", "cos_to_mean"]].median() if len(decomp) else None
    med_after = (decomp[decomp["layer"].isin(after["layer"])].groupby("part")[["rel_std", "cos_to_mean"]].median()
                 if len(decomp) else None)
    ppl = dict(zip(ppl_table["variant"], ppl_table["perplexity"]))
    summary_json = {
        "model": cfg.model.name, "corpus": cfg.data.name, "settings": asdict(s),
        "massive_tokens": "detected" if len(massive) else "first token (none detected)",
        "emerge_layer": emerge, "concentration_layer": concentration,
        "sink_1_share": float(heads["sink"].mean()),
        "sink_1_share_massive_in_input": float(after["sink_1_share"].mean()) if len(after) else None,
        "mass_first_mean": float(layers["mass_first"].mean()),
        "mass_first_massive_in_input": float(after["mass_first"].mean()) if len(after) else None,
        "random_positions": random_pos.tolist(), "heatmap_layers": hm_layers,
        "decomposition_median": {} if med is None else {p: r.to_dict() for p, r in med.iterrows()},
        "decomposition_median_massive_in_input": {} if med_after is None else {p: r.to_dict() for p, r in med_after.iterrows()},
        "perplexity": ppl, "perplexity_ratio": {k: v / base for k, v in ppl.items()},
    }
    write_json(summary_json, out / "summary.json")
    log.info("%s: attention concentrates from layer %s; Sink_1 share %.2f; perplexity %s", name, concentration,
             summary_json["sink_1_share"], ", ".join(f"{k} {v:.3f}" for k, v in ppl.items()))
    with tracking.stage_run(cfg) as wb:
        for _, row in layers.iterrows():
            wb.log({"layer": int(row.layer), "mass_first": row.mass_first, "mass_massive": row.mass_massive,
                    "sink_1_share": row.sink_1_share})
        wb.summary.update({k: v for k, v in summary_json.items() if isinstance(v, (int, float, str)) and v is not None})
        wb.summary.update({f"perplexity/{k}": v for k, v in ppl.items()})
        wb.log({"heads": tracking.table(heads), "decomposition": tracking.table(decomp), "perplexity": tracking.table(ppl_table),
                **{key: tracking.image(out / f"{key}.png") for key in figs}})


# ---------------------------------------------------------------- report
def report_section(cfg: DictConfig, model: str, corpus: str) -> str:
    """An HTML snippet for the report: the numbers, the perplexity table and both figures."""
    out = root(cfg) / cfg.paths.results / model / corpus / "attention"
    res = json.loads((out / "summary.json").read_text())
    ppl = read_table(out / "perplexity.parquet")[["variant", "perplexity", "ratio_to_none"]]
    med = res.get("decomposition_median_massive_in_input") or res.get("decomposition_median") or {}
    decomp = "".join(f"<li>{p}: rel_std {v['rel_std']:.3g}, cos to mean {v['cos_to_mean']:.3f}</li>" for p, v in med.items())
    imgs = "".join(f'<img alt="{f}" src="data:image/png;base64,{base64.b64encode((out / f"{f}.png").read_bytes()).decode()}">'
                   for f in ("heatmaps", "sink_curve"))

    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    return (f"<h3>Attention: {model} on {corpus}</h3>"
            f"<p>Massive tokens: {res['massive_tokens']}; massive activations emerge after block {fmt(res['emerge_layer'])}; "
            f"attention concentrates on them from layer {fmt(res['concentration_layer'])}. Sink_1 share of heads: "
            f"{fmt(res['sink_1_share'])} overall, {fmt(res['sink_1_share_massive_in_input'])} where the input holds "
            f"massive activations; mean attention on the first token {fmt(res['mass_first_mean'])}.</p>"
            f"<p>Across sequences, each head's output part (median over heads):</p><ul>{decomp}</ul>"
            + ppl.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}")
            + f'<div class="figs">{imgs}</div>')


if __name__ == "__main__":
    cli.main("attention", run)
