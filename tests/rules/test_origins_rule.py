"""Where massive activations come from (massive.measure.origins, rule origins): a planted super weight in a
tiny model of each family is found at its exact coordinate, part and block (GPT-2's transposed
Conv1D weight and the right Mixtral expert included); zeroing it removes the massive activation
and the control does not; every weight intervention restores the weights bit for bit, even when
its block raises; an MLP the arch module does not know is one clear line; and the rule end to end."""

import torch
from torch import nn

from massive.core import arch
from massive.measure import origins
from pipeline import html
from pipeline.io import read_table, run_dir

import tiny
from helpers import assert_one_line_error, detected_run, run_module

LAYER, DIM = 1, 7  # tiny.plant: dim 7 massive at the first token (id 0) from block 1's output on; hidden unit 0
EXPERT = 2  # the one Mixtral expert that keeps the planted weight, and that the router sends token 0 to


@torch.no_grad()
def planted(family: str) -> nn.Module:
    model = tiny.plant(tiny.build(family), LAYER, DIM)
    if family == "mixtral":  # only EXPERT writes it, and the router sends the first token there
        moe = arch.find_parts(model).mlps[LAYER]
        keep = moe.experts.down_proj[EXPERT, DIM, 0].clone()
        moe.experts.down_proj[:, DIM, 0] = 0.0
        moe.experts.down_proj[EXPERT, DIM, 0] = keep
        moe.gate.weight[EXPERT, (DIM + 1) % tiny.D] = 50.0  # the carrier dim: nonzero at token 0 only
    return model


def prepare(tmp_path, compose_in, seq_len=32, n_seq=4):
    model = planted("gpt2")
    path = tiny.save(model, tmp_path / "hf_gpt2")
    overrides = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        "model.name=tiny_sw",
        f"model.seq_len={seq_len}",
        "capture.top_k=16",
        "capture.batch_size=2",
        "figures.dpi=40",
        "origins.num_sequences=3",
        "origins.max_chunks=3",
        "origins.batch_size=2",
    ]
    cfg = compose_in(*overrides)
    detected_run(cfg, n_seq, seq_len)
    return cfg, [f"paths.root={tmp_path}", "wandb.mode=disabled", *overrides]


def test_rule_end_to_end(tmp_path, compose_in):
    cfg, args = prepare(tmp_path, compose_in)
    proc = run_module("origins", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(cfg, "origins")
    sub, sw, ppl = (read_table(out / f) for f in ("sublayers.parquet", "superweights.parquet", "perplexity.parquet"))
    assert sub[sub["writes"]][["dim", "block", "part"]].values.tolist() == [[DIM, LAYER, "mlp"]]
    primary = sw[sw["primary"]]
    assert primary[["param", "coordinate", "abs_rank"]].values.tolist() == [
        ["transformer.h.1.mlp.c_proj.weight", f"[0, {DIM}]", 1]
    ]
    assert ppl["intervention"].tolist() == origins.INTERVENTIONS and (ppl["n_chunks"] == 3).all()
    assert (out / "contributions.png").stat().st_size > 1000
    section = html.origins_section(out, cfg.model.name, cfg.data.name)
    assert "Where they come from" in section and "c_proj.weight" in section and section.count("<img") == 1
    bad = run_module("origins", *args, "origins.interventions=[zero_super_weight]")
    assert_one_line_error(bad, "must start with 'none'")
