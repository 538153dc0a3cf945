"""What massive activations cost at inference (massive.inference.precision, massive.inference.quantize, massive.inference.window,
rule inference): the fake quantiser against an independent reference; a planted activation of 1e5
flagged as a float16 overflow at its block (and a float16 capture stopping there in one line);
the windowed mask with W >= seq_len giving full attention's logits exactly; keeping the planted
massive entries in float lowering per-tensor int8 error; bad input in one line; the rule end to end."""

import json

import pandas as pd
import pytest

from pipeline import html
from pipeline.io import read_table, run_dir

import tiny
from helpers import REPO, assert_one_line_error, detected_run, run_module
from topics.inference import DIM, LAYER, planted


# ---------------------------------------------------------------- the rule
def prepare(tmp_path, compose_in, seq_len=32, model=None):
    path = tiny.save(planted("llama", 1e5) if model is None else model, tmp_path / "hf_llama")
    overrides = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        "model.name=tiny_inf",
        f"model.seq_len={seq_len}",
        "capture.top_k=16",
        "capture.batch_size=2",
        "figures.dpi=40",
        "inference.max_chunks=2",
        "inference.batch_size=2",
        "inference.num_sequences=2",
        "inference.windows=[8]",
        "inference.schemes=[a8_per_tensor,a8_per_tensor_keep_massive,w4_per_channel,w4_per_channel_keep_super]",
    ]
    cfg = compose_in(*overrides)
    detected_run(cfg, 4, seq_len)
    return cfg, [f"paths.root={tmp_path}", "wandb.mode=disabled", *overrides]


def test_rule_end_to_end(tmp_path, compose_in):
    cfg, args = prepare(tmp_path, compose_in)
    proc = run_module("inference", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(cfg, "inference")
    h, q, w = (read_table(out / f) for f in ("headroom.parquet", "quantization.parquet", "window.parquet"))
    f16 = h[h["format"] == "float16"].set_index("layer")
    assert f16.loc[LAYER, "overflow"] and f16.loc[LAYER, "first_nonfinite"] and not f16.loc[0, "overflow"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headroom"]["float16"]["measured_first_nonfinite"] == LAYER
    assert summary["headroom"]["float16"]["perplexity"] is None and summary["headroom"]["bfloat16"]["perplexity"] > 0
    assert summary["superweights_kept"] == {"model.layers.1.mlp.down_proj.weight": [[DIM, 0]]}
    fp16 = q[q["scheme"] == "float16"].iloc[0]
    assert pd.isna(fp16["perplexity"]) and "float16" in fp16["note"]  # the overflow, recorded
    assert set(q["massive"]) == {"as is", "mean"} and (q["n_chunks"] == 2).all()
    assert q.loc[(q["scheme"] == "w4_per_channel_keep_super") & (q["massive"] == "as is"), "kept"].iloc[0] == 1
    assert w["variant"].tolist()[:3] == ["full attention", "window", "window + sinks"] and len(w) == 1 + 1 + 2 * 3
    for f in ("headroom.png", "quantization.png"):
        assert (out / f).stat().st_size > 1000
    section = html.inference_section(out, cfg.model.name, cfg.data.name)
    assert (
        "What they cost at inference" in section
        and section.count("<img") == 2
        and "first inf/NaN at block 1" in section
    )


def test_rule_on_a_model_without_massive_activations(tmp_path, compose_in):
    cfg, args = prepare(tmp_path, compose_in, model=tiny.build("gpt2"))
    proc = run_module("inference", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(cfg, "inference")
    q, w = read_table(out / "quantization.parquet"), read_table(out / "window.parquet")
    assert (
        set(q["massive"]) == {"as is"} and (q["kept"].fillna(0) == 0).all()
    )  # nothing detected: nothing to keep or set
    assert q["perplexity"].notna().all() and (w["entries_changed"] == 0).all() and len(w) == 8
    assert json.loads((out / "summary.json").read_text())["superweights_kept"] == {}


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("inference.windows=[0]", "W=0"),
        ("inference.schemes=[a8_per_tensor,int3_magic]", "unknown quantization scheme 'int3_magic'"),
        ("inference.sinks=[0]", "S=0"),
    ],
)
def test_bad_input_fails_with_one_line(tmp_path, bad, needle):
    proc = run_module("inference", f"paths.root={tmp_path}", "wandb.mode=disabled", bad)
    assert_one_line_error(proc, needle)


def test_bad_sweep_fails_the_dry_run_in_one_line(tmp_path):
    import subprocess
    import sys

    import yaml

    sweep = tmp_path / "sweep.yaml"
    for section, needle in [
        ({"windows": [0]}, "inference/windows/0"),
        ({"schemes": ["a8_magic"]}, "a8_magic"),
        ({"corpora": ["pg19"]}, "inference.corpora entry 'pg19'"),
    ]:
        sweep.write_text(yaml.safe_dump({"models": ["smollm2_135m"], "corpora": ["wiki_sample"], "inference": section}))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(REPO / "Snakefile"),
                "--directory",
                str(tmp_path),
                "-n",
                "--config",
                f"sweep={sweep}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode != 0 and len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
