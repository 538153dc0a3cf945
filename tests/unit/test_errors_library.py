"""Bad input: one clear error line naming the bad value, exit code 2, no partial output, and no
earlier good output removed or changed."""

import json
import shutil

import pandas as pd
import pytest

import tiny
from helpers import REPO, assert_one_line_error, files_under, run_module, tree  # noqa: F401


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


def test_sharded_and_bin_weights_are_checked(tmp_path):
    import torch

    from massive.core.errors import MassiveError
    from massive.core.models import check_weights

    model = tiny.build("llama")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    shards = sorted((tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1 and check_weights(tmp_path / "sharded") == shards
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.extra.weight"] = shards[0].name
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MassiveError, match=f"{shards[0].name} lacks tensor 'model.extra.weight'"):
        check_weights(tmp_path / "sharded")
    shards[-1].unlink()
    with pytest.raises(MassiveError, match=f"{shards[-1].name} is missing"):
        check_weights(tmp_path / "sharded")
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    data = (tmp_path / "bin" / "pytorch_model.bin").read_bytes()
    assert check_weights(tmp_path / "bin") == [tmp_path / "bin" / "pytorch_model.bin"]
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(MassiveError, match="pytorch_model.bin is truncated"):
        check_weights(tmp_path / "bin")


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


# ---------------------------------------------------------------- #24: one line, exit 2, nothing lost
@pytest.fixture
def good_copy(good_run, tmp_path):
    """A copy of good_run's working directory (its fetched.json names paths relative to it, so the copy
    uses its own files), the original's tree to compare with, and its overrides rooted in the copy."""

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
