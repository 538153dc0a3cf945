"""How sequences begin (model.bos: auto | always | never), one function for every rule's sequences,
protocol runs in a sweep (<model>@<protocol>), and the report's protocol and outlier sections."""

import json
import re

import pandas as pd
import pytest

from massive.core.models import byte_tokenizer
from massive.measure import perplexity as comparison_nll  # massive.compare's one NLL loop
from pipeline import ablate as ablate_rule
from pipeline import capture as capture_rule
from pipeline import detect as detect_rule
from pipeline import fetch_model
from pipeline import tokenize as tokenize_rule
from pipeline.io import corpus_file, read_provenance, read_table, run_dir, tokens_file, write_table

import tiny
from helpers import assert_one_line_error, run_module
from topics.protocol import DOCS, seqs


# ---------------------------------------------------------------- the rules
def setup_run(tmp_path, compose_in, *extra, add_bos=True, name="tiny_bos"):
    model = tiny.plant(tiny.build("llama"), layer=1, dim=7)  # massive at token 0: the byte tokenizer's BOS
    path = tiny.save(model, tmp_path / "hf", add_bos=add_bos)
    args = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        f"model.name={name}",
        "model.seq_len=24",
        "capture.top_k=8",
        "tokenize.num_sequences=4",
        "tokenize.num_documents=20",
        "ablate.max_chunks=3",
        "ablate.interventions=[none,zero]",
        *extra,
    ]
    cfg = compose_in(*args)
    fetch_model.run(cfg)
    write_table(pd.DataFrame({"text": DOCS}), corpus_file(cfg), cfg)
    return cfg, [f"paths.root={tmp_path}", "wandb.mode=disabled", *args]


def test_a_tokenizer_that_adds_a_bos_gets_it_on_every_sequence_and_chunk(tmp_path, compose_in, monkeypatch):
    """Nothing set by the user (model.bos=auto): the capture's sequences and every perplexity chunk
    begin with the BOS, made by the one function (massive.core.sequences.make) for tokenize and ablate."""
    cfg, argv = setup_run(tmp_path, compose_in)
    proc = run_module("tokenize", *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids = read_table(tokens_file(cfg))["input_ids"].tolist()
    assert len(ids) == 4 and all(row[0] == 0 and 0 not in list(row[1:]) and len(row) == 24 for row in ids)
    assert read_provenance(tokens_file(cfg))["protocol"] == "bos"

    made, chunks = [], []
    real_make = seqs.make
    monkeypatch.setattr(
        seqs, "make", lambda *a, **k: made.append(a[3] if len(a) > 3 else k.get("count")) or real_make(*a, **k)
    )
    real_nll = comparison_nll.chunk_nll
    monkeypatch.setattr(
        comparison_nll, "chunk_nll", lambda model, c, *a, **k: chunks.append(c) or real_nll(model, c, *a, **k)
    )
    tokenize_rule.run(cfg)
    capture_rule.run(cfg)
    detect_rule.run(cfg)
    ablate_rule.run(cfg)
    assert made[0] == 4 and made[-1] == 3  # tokenize's 4 sequences, then ablate's 3 chunks: the same function
    assert len(chunks) == 2 and all(
        c.shape == (3, 24) and (c[:, 0] == 0).all() and not (c[:, 1:] == 0).any() for c in chunks
    )
    summary = read_table(run_dir(cfg, "detect") / "summary.parquet")
    assert summary["role"].tolist() == ["bos"] and summary["dim"].tolist() == [7]  # the planted one, at the BOS
    result = json.loads((run_dir(cfg, "detect") / "summary.json").read_text())
    assert (result["protocol"], result["requested"], result["tokenizer_adds_bos"], result["warning"]) == (
        "bos",
        "auto",
        True,
        None,
    )
    ppl = read_table(run_dir(cfg, "ablate") / "perplexity.parquet")
    assert (
        set(ppl["protocol"]) == {"bos"}
        and read_provenance(run_dir(cfg, "ablate") / "perplexity.parquet")["protocol"] == "bos"
    )
    prompt = read_table(run_dir(cfg, "capture") / "prompt.parquet")
    assert prompt.query("layer == 0")["token_id"].iloc[0] == 0  # the prompt figures follow the protocol


def test_never_gives_no_bos_and_says_the_tokenizer_would_have_added_one(tmp_path, compose_in):
    cfg, argv = setup_run(tmp_path, compose_in, "model.bos=never")
    for rule in ("tokenize", "capture", "detect"):
        proc = run_module(rule, *argv)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert not any(0 in list(row) for row in read_table(tokens_file(cfg))["input_ids"])
    result = json.loads((run_dir(cfg, "detect") / "summary.json").read_text())
    assert (
        result["protocol"] == "no_bos"
        and "the tokenizer adds a BOS ('<s>') by default, but this run has none" in result["warning"]
    )
    assert not result["found"]  # the planted token never occurs

    from pipeline import html
    from pipeline import sweep as sweeps

    sweep = {"models": ["tiny_bos"], "corpora": [cfg.data.name], "protocols": {"names": [], "corpora": []}}
    assert sweeps.llm_pairs(sweep) == [("tiny_bos", cfg.data.name)]
    section = "".join(html.protocols_section(lambda rule, *job: run_dir(cfg, rule), sweep, 100.0, 1000.0, cfg.detect))
    assert (
        "Sequence protocols" in section and 'class="verdict warning"' in section and "but this run has none" in section
    )
    assert "Massive activations vs outlier features" in section


def test_bos_always_for_a_tokenizer_without_one_fails_in_one_line(tmp_path, compose_in):
    cfg, argv = setup_run(tmp_path, compose_in, "model.bos=always")
    tok = byte_tokenizer()
    tok.bos_token = None
    tok.save_pretrained(tmp_path / "hf")  # the model's tokenizer has no BOS token now
    fetch_model.run(cfg)  # fetched again (fetch_model records the files' hashes)
    proc = run_module("tokenize", *argv)
    assert_one_line_error(proc, "model.bos=always", "'tiny_bos'", "no BOS token")
    assert not tokens_file(cfg).exists()


def test_the_removed_add_special_tokens_key_is_rejected(tmp_path, compose_in):
    with pytest.raises(Exception, match="add_special_tokens"):
        compose_in("tokenize.add_special_tokens=true")


def test_a_sweep_with_protocols_adds_their_runs_and_an_unknown_name_fails_the_dry_run(tmp_path):
    from helpers import assert_one_error_line, job_counts, snakemake, write_sweep

    sweep = write_sweep(
        tmp_path,
        models=["tiny_random"],
        corpora=["news_sample", "wiki_sample"],
        protocols={"names": ["bos"], "corpora": ["news_sample"], "overrides": ["tokenize.num_sequences=2"]},
        ablate={"interventions": ["none", "zero"], "layers": ["emerge"]},
        attention={"num_sequences": 2},
    )
    proc = snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert (
        counts["protocol_model"] == 1
        and counts["fetch_model"] == 1
        and counts["capture"] == 3
        and counts["ablate"] == 3
    )
    assert counts["attention"] == 3
    assert (
        "-m pipeline.capture model=tiny_random model.name=tiny_random@bos model.bos=always data=news_sample "
        "tokenize.num_sequences=2 2>&1"
    ) in proc.stdout
    assert re.search(r"results/tiny_random@bos/news_sample/ablate/emerge/[0-9a-f]{8}/perplexity\.parquet", proc.stdout)
    assert "results/tiny_random@bos/wiki_sample" not in proc.stdout  # only the protocols' corpora
    for protocols, needle in [
        (["bos", "sometimes"], "protocols/1: 'sometimes' is not one of ['bos', 'no_bos']"),
        ({"names": ["bos"], "corpora": ["c4"]}, "protocols.corpora entry 'c4' is not one of the sweep's corpora"),
    ]:
        bad = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], protocols=protocols)
        assert needle in assert_one_error_line(snakemake("-n", "--config", f"sweep={bad}", cwd=tmp_path))
