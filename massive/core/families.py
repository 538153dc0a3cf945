"""Every causal-LM family of the installed transformers, as a tiny random model: which the
library supports, and why it refuses the others.

`tiny_config(model_type)` is the family's own default config with every size field it has shrunk
(2 blocks, residual width 64, 4 heads of 16, 2 key/value heads, MLP width 128, 4 experts of
which 2 routed, a 258-token vocabulary): whatever the field is called in that family
(hidden_size / n_embd / d_model, num_hidden_layers / n_layer, ...). Nothing per family is typed
in beyond the names of size fields. `refusal(config)` is the one line saying why a family cannot
be measured (an encoder-decoder, an encoder, a state-space or recurrent model with no attention),
or None.

    >>> from massive.core import families
    >>> model = families.build("gemma2")
    >>> families.refusal(families.tiny_config("mamba"))
    "model_type='mamba': a state-space model with no attention layer (no attention to analyse, no block of attention + MLP)"
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from massive.core import arch, hooks

D, HEADS, KV_HEADS, HEAD_DIM, MLP, LAYERS, EXPERTS, ROUTED, VOCAB = 64, 4, 2, 16, 128, 2, 4, 2, 258

# size field -> tiny value: set where the family's config has the field
SIZES = {
    "hidden_size": D,
    "n_embd": D,
    "d_model": D,
    "dim": D,
    "model_dim": D,
    "num_hidden_layers": LAYERS,
    "n_layer": LAYERS,
    "num_layers": LAYERS,
    "n_layers": LAYERS,
    "num_attention_heads": HEADS,
    "n_head": HEADS,
    "n_heads": HEADS,
    "num_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "n_kv_heads": KV_HEADS,
    "num_kv_heads": KV_HEADS,
    "multi_query_group_num": KV_HEADS,
    "head_dim": HEAD_DIM,
    "kv_channels": HEAD_DIM,
    "intermediate_size": MLP,
    "n_inner": MLP,
    "ffn_dim": MLP,
    "ffn_hidden_size": MLP,
    "d_ff": MLP,
    "moe_intermediate_size": MLP // 2,
    "shared_expert_intermediate_size": MLP // 2,
    "expert_intermediate_size": MLP // 2,
    "num_local_experts": EXPERTS,
    "num_experts": EXPERTS,
    "n_routed_experts": EXPERTS,
    "moe_num_experts": EXPERTS,
    "num_experts_per_tok": ROUTED,
    "moe_k": ROUTED,
    "num_experts_per_token": ROUTED,
    "top_k_experts": ROUTED,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "vocab_size": VOCAB,
    "max_position_embeddings": 256,
    "n_positions": 256,
    "n_ctx": 256,
    "seq_length": 256,
    "sliding_window": 8,
    "rotary_dim": 8,
    "partial_rotary_factor": 0.5,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    # multi-head latent attention (DeepSeek-V2/V3): queries and keys wider than values
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
    # hybrids (Qwen3-Next: linear attention every layer but the last of each `full_attention_interval`)
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "full_attention_interval": 2,
}
NO_ATTENTION = ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm")


def _shrink(config) -> None:
    for key, value in SIZES.items():
        if key in config.to_dict() or hasattr(config, key):
            current = getattr(config, key, None)
            if key == "rotary_dim" and current is None:
                continue
            if key == "partial_rotary_factor" and current in (None, 1.0):
                continue
            if key == "sliding_window" and current is None:
                continue
            if key == "eos_token_id" and isinstance(current, list):
                value = [value]
            try:
                setattr(config, key, value)
            except (AttributeError, TypeError, ValueError):
                pass
    if getattr(config, "qk_rope_head_dim", None) and hasattr(config, "head_dim"):
        config.head_dim = config.qk_rope_head_dim  # multi-head latent attention: rotary on the rope part only
    if getattr(config, "kv_lora_rank", None) and hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = config.num_attention_heads  # its keys are per head (no grouped queries)
    for key in ("layer_types", "mlp_layer_types", "layers_block_type"):
        types = getattr(config, key, None)
        if isinstance(types, (list, tuple)) and len(types) != LAYERS:
            setattr(config, key, _layer_types(config, key, types))


def _layer_types(config, key: str, types) -> list:
    """The first LAYERS entries, keeping one of each kind where there are two (sliding + full attention, linear + full)."""
    kinds = list(dict.fromkeys(types))
    if len(kinds) >= 2:
        return [kinds[0]] * (LAYERS - 1) + [kinds[1]]
    return list(types[:LAYERS])


def tiny_config(model_type: str):
    """The family's default config with its size fields shrunk (a text_config too, for multimodal wrappers)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    _shrink(config)
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        _shrink(text)
    return config


def refusal(config) -> str | None:
    """None when the family can be measured, else one line naming it and why not."""
    t = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        return f"model_type={t!r}: an encoder-decoder (the library measures decoder-only residual streams)"
    if t in NO_ATTENTION or (getattr(config, "attn_layer_indices", None) == [] and "mamba" in t):
        return f"model_type={t!r}: a state-space or recurrent model with no attention layer (no attention to analyse)"
    return None


def build(model_type: str, seed: int = 0, config=None) -> nn.Module:
    """A tiny random float32 causal LM of the family, in eval mode, with eager attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = config or tiny_config(model_type)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


@torch.no_grad()
def plant(
    model: nn.Module,
    layer: int,
    dim: int,
    token_id: int = 0,
    carrier: int | None = None,
    gain: float = 200.0,
    post_gain: float = 1000.0,
) -> nn.Module:
    """Plant a massive activation in dim `dim` after block `layer` at every position holding
    `token_id` (tests/tiny.py's planting, for any family built here): the carrier dim is zeroed in the embeddings
    and in every write to the residual stream (linear layers, fused experts [experts, d_model, d_mlp]
    or their transposed form, biases), and hidden unit 0 of block `layer`'s MLP (of every expert in
    a mixture of experts: the router picks any) reads only the carrier and writes only `dim`. Where
    the MLP's write passes through a post-norm (Gemma-2/3, OLMo-2/3), the norm rescales it, so the
    planted size comes from the norm's gain at `dim` (+ post_gain), and row `dim` of the down
    projection is the planted unit's only entry (other tokens write exactly 0 there)."""
    d = arch.hidden_size(model.config)
    carrier = (dim + 1) % d if carrier is None else carrier
    emb = model.get_input_embeddings().weight
    emb[:, carrier] = 0.0
    emb[token_id, carrier] = 4.0
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod.out_features == d:
            mod.weight[carrier, :] = 0.0
            if mod.bias is not None:
                mod.bias[carrier] = 0.0
        elif isinstance(mod, Conv1D) and mod.nf == d:
            mod.weight[:, carrier] = 0.0
            mod.bias[carrier] = 0.0
        elif isinstance(mod, nn.Embedding) and mod is not model.get_input_embeddings() and mod.embedding_dim == d:
            mod.weight[:, carrier] = 0.0
    for name, p in model.named_parameters():
        if name.endswith("experts.down_proj"):
            (p[:, :, carrier] if p.shape[2] == d and p.shape[1] != d else p[:, carrier, :]).zero_()
        elif name.endswith("experts.down_proj_bias"):
            p[:, carrier] = 0.0
    parts = arch.find_parts(model)
    mlp = parts.mlps[layer]
    w = arch.down_weights(mlp, d)
    j = 0
    if w.experts:
        ex = w.module
        down = w.weight
        transposed = w.orientation == "in_out"
        gate_up = ex.gate_up_proj
        n_mlp = down.shape[1] if transposed else down.shape[2]
        rows = (2 * j, 2 * j + 1) if not getattr(ex, "is_concatenated", True) else (j, n_mlp + j)
        for r in rows:
            if transposed:
                gate_up[:, :, r] = 0.0
                gate_up[:, carrier, r] = 1.0
            else:
                gate_up[:, r, :] = 0.0
                gate_up[:, r, carrier] = 1.0
            if getattr(ex, "gate_up_proj_bias", None) is not None:
                ex.gate_up_proj_bias[:, r] = 0.0
        if transposed:
            down[:, j, :] = 0.0
            down[:, :, dim] = 0.0
            down[:, j, dim] = gain
        else:
            down[:, :, j] = 0.0
            down[:, dim, :] = 0.0
            down[:, dim, j] = gain
        if getattr(ex, "down_proj_bias", None) is not None:
            ex.down_proj_bias[:, dim] = 0.0
    else:
        n_mlp = w.matrix().shape[1]
        for mod in mlp.modules():
            if mod is w.module:
                continue
            if isinstance(mod, nn.Linear) and mod.in_features == d and mod.out_features in (n_mlp, 2 * n_mlp):
                for r in (j,) if mod.out_features == n_mlp else (j, n_mlp + j):  # fused gate_up: gate rows then up rows
                    mod.weight[r, :] = 0.0
                    mod.weight[r, carrier] = 1.0
                    if mod.bias is not None:
                        mod.bias[r] = -3.0
            elif isinstance(mod, Conv1D) and mod.nf == n_mlp:
                mod.weight[:, j] = 0.0
                mod.weight[carrier, j] = 1.0
                mod.bias[j] = -3.0
        m = w.matrix()  # a view [d_model, d_mlp]
        m[:, j] = 0.0
        post = hooks.writers(model, parts)[layer]["mlp"].chain
        if post:
            m[dim, :] = 0.0
        m[dim, j] = gain
        if getattr(w.module, "bias", None) is not None and post:
            w.module.bias[dim] = 0.0
    post = hooks.writers(model, parts)[layer]["mlp"].chain
    if post:
        norm = parts.blocks[layer].get_submodule(post[-1])
        norm.weight[dim] += post_gain
    return model


# ---------------------------------------------------------------- coverage: every step on a planted tiny model
DIM, MAX_PARAMS = 7, 20_000_000


def causal_lm_types() -> list[str]:
    """Every model_type the installed transformers maps to a causal-LM class, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def structure(model: nn.Module) -> str:
    """The structure that decides where the residual stream is measured, in a few words."""
    parts = arch.find_parts(model)
    ws = hooks.writers(model, parts)
    d = arch.hidden_size(model.config)
    words = []
    if any(w.chain for b in ws for w in b.values()):
        words.append("post-norm")
    if any(w.residual for b in ws for w in b.values()):
        words.append("residual inside modules")
    if any(w.scale != 1.0 for b in ws for w in b.values()):
        words.append("residual multiplier")
    if arch.is_parallel(parts.blocks[0]):
        words.append("parallel")
    try:
        if any(m is not None and arch.down_weights(m, d).experts for m in parts.mlps):
            words.append("MoE")
    except Exception:  # noqa: BLE001 - an unknown MLP is reported by the step that needs it
        pass
    if any(isinstance(getattr(a, "sinks", None), torch.Tensor) for a in parts.attentions):
        words.append("learned sink")
    return ", ".join(words) or "pre-norm"


def check(model_type: str) -> dict:
    """Build a tiny planted model of `model_type` and run capture, detect, intervene, perplexity,
    origins and attention on it, checking each: {"model_type", "status": supported | refused,
    "why": one line (empty when supported), "structure", "notes"}. Never raises."""
    row = {"model_type": model_type, "status": "refused", "why": "", "structure": "", "notes": ""}
    step = "config"
    try:
        config = tiny_config(model_type)
        reason = refusal(config)
        if reason:
            row["why"] = reason
            return row
        step = "build"
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config)
        n = sum(p.numel() for p in meta.parameters())
        if n > MAX_PARAMS:
            row["why"] = (
                f"model_type={model_type!r}: its config has size fields massive.core.families does not shrink ({n:,} parameters)"
            )
            return row
        model = build(model_type, config=config)
        step = "blocks"
        row["structure"] = structure(model)
        _check(model, row)
        row["status"] = "supported"
    except Unsupported as exc:
        row["why"] = f"model_type={model_type!r}: {exc}"
    except Exception as exc:  # noqa: BLE001 - every failure becomes the family's one line
        msg = " ".join(str(exc).split())[:240]
        if "no MLP module of its own" in msg:
            msg = (
                "its blocks have no MLP module of their own (encoder-style layers: intermediate + output, with the "
                "residual add and norm inside); not known to massive.core.arch"
            )
            row["why"] = f"model_type={model_type!r}: {msg}"
        else:
            row["why"] = (
                f"model_type={model_type!r}: {step if not row['structure'] else 'a step'} failed: {type(exc).__name__}: {msg}"
            )
    return row


class Unsupported(Exception):
    """A step ran but its result is wrong for this family: the family is refused with this line."""


def _check(model: nn.Module, row: dict) -> None:
    from massive.core import hooks
    from massive.intervene.comparison import compare
    from massive.intervene.interventions import intervene
    from massive.measure import attention, origins
    from massive.measure.capture import capture
    from massive.measure.detect import detect

    t = row["model_type"]
    parts = arch.find_parts(model)
    d = arch.hidden_size(model.config)
    layer = 0
    for i, m in enumerate(parts.mlps):
        if m is not None and arch.down_weights(m, d).experts:
            layer = i
            break
    plant(model, layer, DIM)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (4, 16), generator=g)
    ids[:, 0] = 0
    n = len(parts.blocks)
    names = [f(L) for L in range(n) for f in (hooks.resid_pre, hooks.attn_out, hooks.mlp_out, hooks.resid_post)]
    with torch.no_grad(), hooks.cache(model, names) as st:
        model(ids[:1], use_cache=False)
    note = hooks.decomposition_note(model, parts)
    worst = max(
        float(
            (st[hooks.resid_pre(L)] + st[hooks.attn_out(L)] + st[hooks.mlp_out(L)] - st[hooks.resid_post(L)])
            .abs()
            .max()
            / st[hooks.resid_post(L)].abs().max().clamp_min(1e-12)
        )
        for L in range(n)
    )
    if worst > 1e-4 and note is None:
        raise Unsupported(f"resid_pre + attn_out + mlp_out != resid_post (relative error {worst:.2g})")
    found = detect(capture(model, ids, k=16))
    if found.dims != [DIM] or found.emerge_layer != layer:
        raise Unsupported(
            f"the activation planted at block {layer} dim {DIM} was found at block {found.emerge_layer} dims {found.dims}"
        )
    cmp = compare(
        model,
        ids,
        {"none": None, "zero": lambda: intervene(model, found, "zero", layers="emerge")},
        resamples=100,
        seed=0,
        where=f"{t}: zeroing the planted activation",
    )
    if abs(cmp.row("zero")["ratio"] - 1) < 1e-4:
        raise Unsupported("zeroing the planted activation left the perplexity unchanged")
    o = origins.find(model, ids, found)
    writes = o.sublayers[o.sublayers["writes"]]
    if (
        writes[["block", "part"]].values.tolist() != [[layer, "mlp"]]
        or not len(o.primary)
        or int(o.primary.iloc[0]["channel"]) != 0
    ):
        raise Unsupported("origins did not name the planted MLP unit")
    marked = torch.zeros(ids.shape, dtype=torch.bool)
    marked[:, 0] = True
    res = attention.analyse(model, ids, marked, emerge=layer, desc=f"attention {t}")
    h = res.heads
    total = (h["mass_massive"] + h["mass_sink"] + h["mass_other"] - 1).abs().max()
    if not float(total) < 1e-5 or not ((h["mass_first"] >= 0) & (h["mass_first"] <= 1 + 1e-6)).all():
        raise Unsupported("attention masses do not add up to 1")
    notes = list(res.summary["skipped_layers"].values()) + list(res.summary["notes"])
    if res.summary["explicit_sink"]:
        notes.append(f"learned sink: mean share {res.summary['mass_sink_mean']:.3f}")
    if note:
        notes.append(note)
    row["notes"] = "; ".join(notes)
