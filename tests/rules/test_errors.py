"""Bad input: one clear error line naming the bad value, exit code 2, no partial output, and no
earlier good output removed or changed."""

import os
import shlex
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

import tiny
from helpers import REPO, assert_one_line_error, files_under, run_module, tree  # noqa: F401


def test_unknown_model_name(tmp_path):
    proc = run_module("fetch_model", "model=llama9_1t", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "llama9_1t")
    assert files_under(tmp_path) == []


def test_config_key_that_does_not_exist(tmp_path):
    proc = run_module("capture", "capture.topk=3", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "topk")


def test_bad_value(tmp_path):
    proc = run_module("tokenize", "model.seq_len=-5", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "model.seq_len=-5")


def _local_model(tmp_path):
    """A tiny llama saved as a local Hugging Face directory, fetched, with one row of tokens."""
    path = tiny.save(tiny.build("llama"), tmp_path / "hf")
    root = tmp_path / "run"
    args = ["model=tiny_random", "model.source=local", f"model.path={path}", f"paths.root={root}"]
    assert run_module("fetch_model", *args).returncode == 0
    from pipeline.cli import compose
    from pipeline.io import write_table

    cfg = compose([*args])
    write_table(
        pd.DataFrame({"seq_id": [0], "input_ids": [tiny.sequences(1, 16)[0].tolist()]}),
        root / "results/tiny_random/wiki_sample/tokens.parquet",
        cfg,
    )
    return root, args, tmp_path / "hf" / "model.safetensors"


@pytest.mark.parametrize(
    "damage, needle", [("missing", "model.safetensors is missing"), ("garbage", "bytes, fetch_model recorded")]
)
def test_weights_damaged_after_fetching_fail_at_load(tmp_path, damage, needle):
    root, args, weights = _local_model(tmp_path)
    weights.unlink() if damage == "missing" else weights.write_bytes(b"\x00garbage" * 100)
    proc = run_module("capture", *args)
    assert_one_line_error(proc, needle, "fetch the model again")
    assert list((root / "results/tiny_random/wiki_sample").glob("capture*")) == []


# ---------------------------------------------------------------- #12 defect 7: fetch_model checks the weights
@pytest.fixture(scope="module")
def fetched_tiny(tmp_path_factory):
    """A working directory where `python -m pipeline.fetch_model model=tiny_random` ran (once per module)."""
    root = tmp_path_factory.mktemp("fetched") / "run"
    assert run_module("fetch_model", "model=tiny_random", f"paths.root={root}").returncode == 0
    return root


@pytest.mark.parametrize(
    "damage, needle",
    [("truncated", "is truncated"), ("garbage", "not a safetensors file"), ("missing", "no weights file")],
)
def test_damaged_weights_fail_fetch_model_and_keep_other_models(tmp_path, damage, needle, fetched_tiny):
    root = tmp_path / "run"
    shutil.copytree(fetched_tiny, root, symlinks=True)  # another model, fetched before
    good = tree(root)
    path = tiny.save(tiny.build("llama"), tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif damage == "garbage":
        weights.write_bytes(b"\x00garbage" * 100)
    else:
        weights.unlink()
    proc = run_module(
        "fetch_model", "model=smollm2_135m", "model.source=local", f"model.path={path}", f"paths.root={root}"
    )
    assert_one_line_error(proc, needle, str(tmp_path / "hf"))
    assert not (root / "cache/models/smollm2_135m").exists()  # no fetched.json, no empty folder
    assert tree(root) == good  # the other model's fetched.json is untouched


def test_corrupt_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\x01" * 64)
    proc = run_module(
        "fetch_model", "model=smollm2_135m", "model.source=gguf", f"model.path={bad}", f"paths.root={tmp_path / 'run'}"
    )
    assert_one_line_error(proc, "cannot read GGUF file", str(bad))
    assert files_under(tmp_path / "run") == []


def test_missing_gguf_file(tmp_path):
    proc = run_module(
        "fetch_model",
        "model=smollm2_135m",
        "model.source=gguf",
        f"model.path={tmp_path}/nope.gguf",
        f"paths.root={tmp_path}",
    )
    assert_one_line_error(proc, "nope.gguf")


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    proc = run_module(
        "fetch_corpus", "data=news_sample", "data.kind=text_file", f"data.path={empty}", f"paths.root={tmp_path}"
    )
    assert_one_line_error(proc, "corpus 'news_sample' is empty")
    assert not (tmp_path / "cache/corpora/news_sample.parquet").exists()


# ---------------------------------------------------------------- #12 defect 5: text that is not UTF-8
def test_text_that_is_not_utf8_fails_unless_its_encoding_is_named(tmp_path):
    root = tmp_path / "run"
    good, latin = tmp_path / "good.txt", tmp_path / "latin1.txt"
    good.write_text("A first document, in plain UTF-8 text.\n\nAnd a second one.\n")
    latin.write_bytes("Café au lait, crème brûlée.\n\nÀ bientôt.\n".encode("latin-1"))
    args = ["data=news_sample", "data.kind=text_file", "data.min_chars=1", f"paths.root={root}"]
    assert run_module("fetch_corpus", *args, f"data.path={good}").returncode == 0
    before = tree(root)
    proc = run_module("fetch_corpus", *args, f"data.path={latin}")
    assert_one_line_error(proc, str(latin), "not valid UTF-8", "offset 3")  # "Caf" then 0xe9
    assert tree(root) == before
    assert run_module("fetch_corpus", *args, f"data.path={latin}", "data.encoding=latin-1").returncode == 0
    from pipeline.io import read_table

    text = read_table(root / "cache/corpora/news_sample.parquet")["text"].tolist()
    assert text == ["Café au lait, crème brûlée.", "À bientôt."]


# ---------------------------------------------------------------- #12 defect 6: checks before loading anything
@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A tiny model's good fetch, corpus, tokens and capture (with its .hydra record)."""
    tmp = tmp_path_factory.mktemp("good_run")
    text = tmp / "t.txt"
    text.write_text("\n\n".join(f"Document {i}: some text, with a delimiter. And more words." for i in range(200)))
    root = tmp / "run"
    args = [
        "model=tiny_random",
        "data=news_sample",
        "data.kind=text_file",
        f"data.path={text}",
        f"paths.root={root}",
        "tokenize.num_sequences=2",
        "capture.top_k=8",
    ]
    for stage in ("fetch_model", "fetch_corpus", "tokenize", "capture"):
        proc = run_module(stage, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    from helpers import only_id

    assert (only_id(root / "results/tiny_random/news_sample/capture") / ".hydra/config.yaml").is_file()
    return root, args


@pytest.mark.parametrize(
    "stage, override, needles",
    [
        ("capture", "capture.top_k=1000000000", ["capture.top_k=1000000000", "4096 entries", "64 tokens x 64 dims"]),
        ("tokenize", "model.seq_len=100000", ["seq_len=100000", "maximum positions", "(256)"]),
        ("capture", "tokenize.seq_len=300", ["seq_len=300", "maximum positions"]),
        ("figures", "figures.layer_3d=4", ["figures.layer_3d=4", "outside 0..3"]),
        ("attention", "attention.heatmap_layers=[0,9]", ["attention.heatmap_layers", "block 9", "0..3"]),
        ("ablate", "ablate.layers=[1,7]", ["ablate.layers", "block 7", "0..3"]),
    ],
)
def test_values_checked_against_the_model_before_loading(good_run, stage, override, needles):
    root, args = good_run
    before = tree(root)
    proc = run_module(stage, *args, override)
    assert_one_line_error(proc, *needles)
    assert tree(root) == before  # the good run's outputs and .hydra/config.yaml as they were, no new folder


def test_preflight_checks_only_a_fetched_model(compose_in):
    from pipeline.checks import preflight

    preflight(compose_in("model=tiny_random", "capture.top_k=1000000000"), "capture")  # not fetched: the rule says so


def test_checks_and_protocol_read_the_facts_fetch_model_recorded(good_run, monkeypatch):
    """fetch_model records what the checks and model.bos read (fetched.json "facts", under the options
    they were read with): a rule with those options reads neither config.json nor the tokenizer; other
    model.config_overrides read the config again. The facts equal what the files say."""
    import json

    import transformers

    from massive.core.errors import MassiveError
    from pipeline import model
    from pipeline.checks import preflight
    from pipeline.cli import compose

    root, args = good_run
    record = json.loads((root / "cache/models/tiny_random/fetched.json").read_text())
    cfg = compose(args)
    live = model.read_facts(cfg, model.hf_dir(cfg), tokenizer=True)
    assert record["facts"] == live and live["num_layers"] == 4 and live["tokenizer"] is not None

    def unread(*a, **k):
        raise AssertionError("read again")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unread)
    monkeypatch.setattr(model, "load_tokenizer", unread)
    with pytest.raises(MassiveError, match="capture.top_k=1000000000 is above"):
        preflight(compose([*args, "capture.top_k=1000000000"]), "capture")
    assert model.protocol(compose([*args, "model.bos=always"])).bos  # from the recorded BosFacts
    with pytest.raises(AssertionError, match="read again"):  # other options: the config is read again
        preflight(compose([*args, "+model.config_overrides.max_position_embeddings=8"]), "capture")


# ---------------------------------------------------------------- #24: one line, exit 2, nothing lost
@pytest.fixture
def good_copy(good_run, tmp_path):
    """A copy of good_run's working directory (its fetched.json names paths relative to it, so the copy
    uses its own files), the original's tree to compare with, and its overrides rooted in the copy."""
    import shutil

    root, args = good_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    args = [a if not a.startswith("paths.root=") else f"paths.root={copy}" for a in args]
    from pipeline.cli import compose
    from pipeline.model import hf_dir

    assert (
        hf_dir(compose(args)) == copy / "cache/models/tiny_random/hf"
    )  # its own files, verified once (.verified.json)
    return copy, args, tree(root)


def test_a_corrupt_parquet_input_names_the_file_and_its_rule(good_copy, good_run):
    copy, args, original = good_copy
    from helpers import only_id

    tokens = only_id(copy / "results/tiny_random/news_sample/tokenize") / "tokens.parquet"
    tokens.write_bytes(tokens.read_bytes()[: tokens.stat().st_size // 2])
    before = tree(copy)
    proc = run_module("capture", *args)
    assert_one_line_error(proc, str(tokens), "not a readable Parquet file", "rule tokenize")
    assert tree(copy) == before and tree(good_run[0]) == original


def test_fewer_sequences_than_asked_is_an_error_unless_allowed(good_copy, good_run):
    copy, args, original = good_copy
    before = tree(copy)
    proc = run_module("tokenize", *args, "tokenize.num_sequences=100000")
    assert_one_line_error(proc, "gives only", "of tokenize.num_sequences=100000", "tokenize.allow_fewer=true")
    assert tree(copy) == before
    proc = run_module("tokenize", *args, "tokenize.num_sequences=100000", "tokenize.allow_fewer=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree(good_run[0]) == original


def test_detect_tracks_missing_values_and_survives_a_tracker_that_cannot_start(good_copy):
    """detect.min_abs=0 detect.min_ratio=1: fade_layer mixes null and layers in the W&B table; W&B online
    without a reachable server (WANDB_MODE from the environment): one warning line, offline, exit 0."""
    copy, args, _ = good_copy
    args = [
        *args,
        "detect.min_abs=0",
        "detect.min_ratio=1",
        "capture.counts.min_abs=[0]",
        "capture.counts.min_ratio=[1]",
    ]
    assert run_module("capture", *args).returncode == 0  # counted at those thresholds (capture.counts)
    proc = run_module("detect", *args, "wandb.mode=offline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "x" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_INIT_TIMEOUT": "5",
    }
    started = time.time()
    proc = run_module("detect", *args, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.time() - started < 60
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: wandb:")]
    assert len(warnings) >= 1 and "continuing offline" in warnings[0], proc.stderr[-2000:]
    assert list((copy / "wandb").glob("offline-run-*"))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (a user namespace to mount a small tmpfs)")
def test_a_full_disk_is_one_line_naming_the_path(good_copy):
    copy, args, _ = good_copy
    detect = copy / "results/tiny_random/news_sample/detect"
    detect.mkdir(parents=True, exist_ok=True)
    (detect / "earlier.json").write_text("{}")
    before = tree(copy)
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pipeline.detect", *args])
    script = f"mount -t tmpfs -o size=12k none {shlex.quote(str(detect))} && {cmd}"
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    if "mount" in proc.stderr and proc.returncode != 2:
        pytest.skip(f"no tmpfs in a user namespace here: {proc.stderr[-300:]}")
    assert_one_line_error(proc, "no space left on the device writing", str(detect))
    assert tree(copy) == before  # the tmpfs is gone with the namespace: the earlier outputs as they were
