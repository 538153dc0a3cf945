"""Bad input: one clear error line naming the bad value, exit code 2, no partial output, and no
earlier good output removed or changed."""

import json

import pytest

import tiny
from helpers import REPO, assert_one_line_error, files_under, run_module, tree  # noqa: F401


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
