"""Bad input: one clear error line naming the bad value, exit code 2, and no partial output."""

import pandas as pd

import tiny
from conftest import assert_one_line_error, run_module


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and ".hydra" not in p.parts)


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


def _local_model(tmp_path, weights: bytes | None):
    path = tiny.save(tiny.build("llama"), tmp_path / "hf")
    st = tmp_path / "hf" / "model.safetensors"
    if weights is None:
        st.unlink()
    else:
        st.write_bytes(weights)
    root = tmp_path / "run"
    args = ["model=tiny_random", "model.source=local", f"model.path={path}", f"paths.root={root}"]
    assert run_module("fetch_model", *args).returncode == 0
    from pipeline.io import write_table
    from pipeline.cli import compose

    cfg = compose([*args])
    write_table(pd.DataFrame({"seq_id": [0], "input_ids": [tiny.sequences(1, 16)[0].tolist()]}),
                root / "results/tiny_random/wiki_sample/tokens.parquet", cfg)
    return root, args


def test_missing_weights_file(tmp_path):
    root, args = _local_model(tmp_path, weights=None)
    proc = run_module("capture", *args)
    assert_one_line_error(proc, "cannot load the weights of 'tiny_random'")
    assert not (root / "results/tiny_random/wiki_sample/capture/topk.parquet").exists()


def test_corrupt_weights_file(tmp_path):
    root, args = _local_model(tmp_path, weights=b"\x00garbage" * 100)
    proc = run_module("capture", *args)
    assert_one_line_error(proc, "cannot load the weights of 'tiny_random'")
    assert list((root / "results/tiny_random/wiki_sample/capture").glob("*.parquet")) == []


def test_corrupt_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\x01" * 64)
    proc = run_module("fetch_model", "model=smollm2_135m", "model.source=gguf", f"model.path={bad}", f"paths.root={tmp_path / 'run'}")
    assert_one_line_error(proc, "cannot read GGUF file", str(bad))
    assert files_under(tmp_path / "run") == []


def test_missing_gguf_file(tmp_path):
    proc = run_module("fetch_model", "model=smollm2_135m", "model.source=gguf", f"model.path={tmp_path}/nope.gguf",
                      f"paths.root={tmp_path}")
    assert_one_line_error(proc, "nope.gguf")


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    proc = run_module("fetch_corpus", "data=news_sample", "data.kind=text_file", f"data.path={empty}", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "corpus 'news_sample' is empty")
    assert not (tmp_path / "cache/corpora/news_sample.parquet").exists()


def test_seq_len_above_the_model_maximum(tmp_path):
    root = tmp_path / "run"
    args = ["model=tiny_random", f"paths.root={root}"]
    assert run_module("fetch_model", *args).returncode == 0
    text = tmp_path / "t.txt"
    text.write_text("some text. " * 500)
    assert run_module("fetch_corpus", "data.kind=text_file", f"data.path={text}", *args).returncode == 0
    proc = run_module("tokenize", "model.seq_len=100000", *args)
    assert_one_line_error(proc, "seq_len=100000", "maximum positions")
    assert not (root / "results/tiny_random/wiki_sample/tokens.parquet").exists()
