"""Attention analysis on tiny random models: exact eager attention, the decomposition, sinks,
the mean-replacement intervention (massive.measure.attention, in memory) and the rule end to end."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from massive.core.arch import find_parts
from massive.measure import attention
from pipeline import attention as rule
from pipeline import html
from pipeline.io import read_table, run_dir

import tiny
from helpers import detected_run

LAYER, DIM = 1, 7  # tiny.plant: dim 7 is massive at the first token (token id 0) from block 1's output on
CONST, CONST_VALUE = 20, 0.1  # wire_sink: a residual dim held at 0.1 for every token


def build(family: str) -> nn.Module:
    """tiny.build, plus gemma and gemma2 (soft-capped logits, sliding windows) at the same size."""
    if family not in ("gemma", "gemma2"):
        return tiny.build(family)
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(
        family,
        hidden_size=tiny.D,
        intermediate_size=tiny.I,
        num_hidden_layers=tiny.L,
        num_attention_heads=tiny.H,
        num_key_value_heads=2,
        head_dim=tiny.D // tiny.H,
        vocab_size=tiny.VOCAB,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **({"sliding_window": 8} if family == "gemma2" else {}),
    )
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def wire_sink(model: nn.Module, gain: float = 2.0) -> nn.Module:
    """Make later blocks attend to a token that carries a large DIM: what trained models learn.

    In a random-init model attention is near uniform whatever the residual stream holds, so
    tiny.plant alone moves no attention. This adds the two ingredients of a sink by hand:
    a query component every token shares (residual dim CONST held at CONST_VALUE: set in the embedding,
    written by no layer) and, in the blocks after LAYER, one query/key coordinate per head that
    reads CONST on the query side and DIM on the key side (the last coordinate of the head:
    rotary turns it at its slowest frequency, or not at all for phi's partial rotary). The key
    there is large only where DIM is large: the logit to a token is ~ gain^2 * its normalised DIM.
    The same wiring is applied to the model with and without the plant, so any difference in
    attention comes from the planted activation."""
    model.get_input_embeddings().weight[:, CONST] = CONST_VALUE
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod.out_features == tiny.D:
            mod.weight[CONST, :] = 0.0
            if mod.bias is not None:
                mod.bias[CONST] = 0.0
    for name, p in model.named_parameters():
        if name.endswith("experts.down_proj"):
            p[:, CONST, :] = 0.0
    for attn in find_parts(model).attentions[LAYER + 1 :]:
        hd = attn.head_dim
        for proj, source in ((attn.q_proj, CONST), (attn.k_proj, DIM)):
            for h in range(proj.out_features // hd):
                row = h * hd + hd - 1
                proj.weight[row, :] = 0.0
                proj.weight[row, source] = gain
                if proj.bias is not None:
                    proj.bias[row] = 0.0
    return model


def test_settings(compose_in):
    assert rule.settings(compose_in()) == rule.AttentionConfig()
    s = rule.settings(compose_in("++attention.num_sequences=3", "++attention.heatmap_layers=[0,2]"))
    assert s.num_sequences == 3 and s.heatmap_layers == [0, 2]
    with pytest.raises(Exception, match="num_seqs"):  # by the schema once `attention` is in it, else here
        rule.settings(compose_in("++attention.num_seqs=3"))
    with pytest.raises(Exception, match="intervene_layers"):
        rule.settings(compose_in("++attention.intervene_layers=some"))


def prepare(tmp_path, compose_in, seq_len=32, n_seq=4):
    """A tiny planted llama with a wired sink, its tokens, capture and detection, and a corpus whose
    perplexity chunks each start with token 0 (the byte tokenizer reads "<s>" as id 0)."""
    model = wire_sink(tiny.plant(build("llama"), LAYER, DIM))
    path = tiny.save(model, tmp_path / "hf_llama")
    cfg = compose_in(
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        "model.name=tiny_sink",
        f"model.seq_len={seq_len}",
        "capture.top_k=16",
        "capture.batch_size=2",
        "ablate.max_chunks=4",
        "ablate.batch_size=2",
        "++attention.num_sequences=3",
        "figures.dpi=40",
    )
    detected_run(cfg, n_seq, seq_len)
    return cfg


def test_rule_end_to_end(tmp_path, compose_in):
    cfg = prepare(tmp_path, compose_in)
    rule.run(cfg)
    out = run_dir(cfg, "attention")
    heads, layers = read_table(out / "heads.parquet"), read_table(out / "layers.parquet")
    decomp, ppl = read_table(out / "decomposition.parquet"), read_table(out / "perplexity.parquet")
    result = json.loads((out / "summary.json").read_text())
    assert len(heads) == tiny.L * tiny.H and set(heads.columns) >= {
        "layer",
        "head",
        "mass_first",
        "mass_massive",
        "mass_other",
        "sink",
    }
    assert result["emerge_layer"] == LAYER and result["massive_tokens"] == "detected"
    assert result["concentration_layer"] == LAYER + 1
    assert layers.loc[layers.layer > LAYER, "sink_1_share"].eq(1.0).all()
    assert layers.loc[layers.layer <= LAYER, "sink_1_share"].eq(0.0).all()
    assert set(decomp["part"]) == set(attention.PARTS) and len(decomp) == tiny.L * tiny.H * 3
    assert ppl["variant"].tolist() == ["none", "massive_mean", "random_mean", "other_mean", "massive_zero"]
    assert ppl["intervened_layers"].iloc[0] == "2,3"
    r = dict(zip(ppl["variant"], ppl["ratio"]))
    assert abs(r["massive_mean"] - 1) < 1e-3 < abs(r["massive_zero"] - 1), r  # the bias matters; its mean is enough
    for f in ("heatmaps.png", "sink_curve.png"):
        assert (out / f).stat().st_size > 1000
    section = html.attention_section(out, cfg.model.name, cfg.data.name)
    assert section.count("<img") == 2 and "massive_mean" in section
