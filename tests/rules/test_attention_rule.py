"""Attention analysis on tiny random models: exact eager attention, the decomposition, sinks,
the mean-replacement intervention (massive.measure.attention, in memory) and the rule end to end."""

import json

import pytest

from massive.measure import attention
from pipeline import attention as rule
from pipeline import html
from pipeline.io import read_table, run_dir

import tiny
from helpers import detected_run
from topics.attention import DIM, LAYER, build, wire_sink


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
