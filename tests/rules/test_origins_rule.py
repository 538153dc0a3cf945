"""Where massive activations come from (massive.measure.origins, rule origins): a planted super weight in a
tiny model of each family is found at its exact coordinate, part and block (GPT-2's transposed
Conv1D weight and the right Mixtral expert included); zeroing it removes the massive activation
and the control does not; every weight intervention restores the weights bit for bit, even when
its block raises; an MLP the arch module does not know is one clear line; and the rule end to end."""

from massive.measure import origins
from pipeline import html
from pipeline.io import read_table, run_dir

import tiny
from helpers import assert_one_line_error, detected_run, run_module
from topics.origins import DIM, LAYER, planted


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
