"""Every family researchers use: hook points mean what the residual stream receives
(resid_pre + attn_out + mlp_out == resid_post at every block), and the coverage of every
causal-LM model_type of the installed transformers (massive.core.families)."""

import re

from massive.core import families

from topics.families import planted_family

# ---------------------------------------------------------------- the survey sweep (dry run: no hub needed)
SURVEY = [
    "llama3_2_1b",
    "llama3_1_8b",
    "qwen2_5_7b",
    "qwen3_8b",
    "gemma2_2b",
    "gemma3_1b",
    "gemma3_4b",
    "olmo2_7b",
    "pythia_160m",
    "pythia_410m",
    "pythia_1b",
    "pythia_1_4b",
    "pythia_2_8b",
    "pythia_6_9b",
    "phi3_mini",
    "gpt_oss_20b",
    "mistral_7b",
]


def test_survey_sweep_plans_every_family_in_its_own_regime(tmp_path):
    """`snakemake -n --config sweep=survey` with the SLURM profile, offline: every model sized (from its
    sizing.params, or the hub's config.json fixture for the paper's Mistral-7B)."""
    import yaml

    from helpers import REPO, job_counts, paper_env, planned_jobs
    from helpers import slurm_snakemake as snakemake

    for name in SURVEY:
        m = yaml.safe_load((REPO / "conf/model" / f"{name}.yaml").read_text())
        assert m["name"] == name and m["source"] == "hub" and "/" in m["hub_id"], name
        assert m["bos"] in ("auto", "always", "never") and m["dtype"] in ("float16", "bfloat16"), name
        assert m["family"] in families.causal_lm_types(), name
    proc = snakemake("-n", "--config", "sweep=survey", cwd=tmp_path, env=paper_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    pairs = len(SURVEY) * 2
    assert counts["fetch_model"] == len(SURVEY)
    assert counts["capture"] == counts["attention"] == counts["origins"] == pairs
    capture = {j["wildcards"]["model"]: j["resources"] for j in planned_jobs(proc.stdout) if j["rule"] == "capture"}
    assert sorted(capture) == sorted(SURVEY) and all(r["gres"].startswith("gpu:") for r in capture.values())
    assert int(capture["pythia_160m"]["runtime"]) < int(capture["gpt_oss_20b"]["runtime"])
    assert re.search(r"pipeline\.capture model=gemma2_2b data=wikitext2", proc.stdout)


# ---------------------------------------------------------------- through the rules' entry points
def _prepared(tmp_path, compose_in, family, name, seq_len=24, n_seq=3):
    import tiny
    from helpers import detected_run

    model, layer = planted_family(family)
    path = tiny.save(model, tmp_path / f"hf_{family}")
    overrides = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        f"model.name={name}",
        f"model.family={family}",
        f"model.seq_len={seq_len}",
        "capture.top_k=16",
        "capture.batch_size=2",
        "figures.dpi=40",
        "origins.num_sequences=2",
        "origins.max_chunks=2",
        "origins.batch_size=2",
        "++attention.num_sequences=3",
        "ablate.max_chunks=3",
        "ablate.batch_size=2",
    ]
    cfg = compose_in(*overrides)
    detected_run(cfg, n_seq, seq_len)
    return cfg, [f"paths.root={tmp_path}", "wandb.mode=disabled", *overrides], layer


def test_learned_sink_through_the_attention_rule(tmp_path, compose_in):
    import json

    from pipeline import html
    from pipeline.io import read_table, run_dir

    from helpers import run_module

    cfg, args, _ = _prepared(tmp_path, compose_in, "gpt_oss", "tiny_oss")
    proc = run_module("attention", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(cfg, "attention")
    heads = read_table(out / "heads.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert (heads["mass_sink"] > 0).all() and summary["explicit_sink"]
    assert "learned) attention sink" in html.attention_section(out, cfg.model.name, cfg.data.name)
