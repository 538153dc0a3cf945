"""The training data: micro-batch `index` of a split is a function of (seed, split, index), never of a
stream position, so a resumed run draws the same batches."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from massive.core.files import atomic_path
from massive.retrain.backcopy import Backcopy, BackcopySpec
from massive.retrain.train_spec import DATA_NAMES, OpenWebTextSpec


class BackcopyBatches:
    """Bigram-Backcopy batches; micro-batch `index` of a split is its own seeded sample.

    >>> x, y = BackcopyBatches(BackcopySpec(), seed=1).batch("train", 0, batch_size=8, block_size=16)
    >>> x.shape
    torch.Size([8, 16])
    """

    def __init__(self, spec: BackcopySpec, seed: int):
        self.task = Backcopy(spec)
        self.seed = seed

    def batch(self, split: str, index: int, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.batch(split, index, batch_size, block_size, seed=self.seed)


class OpenWebTextBatches:
    """OpenWebText tokenised once (GPT-2 BPE, EOT between documents) into uint16 memmaps in `directory`.

    Rank 0 prepares {train,val}.bin from the `datasets` hub copy (`spec`); other ranks wait for the
    marker file. A batch draws random windows seeded by (seed, split, index).

        >>> data = OpenWebTextBatches("cache/train/openwebtext", seed=1)  # doctest: +SKIP
        >>> x, y = data.batch("val", 0, batch_size=12, block_size=1024)  # doctest: +SKIP
    """

    def __init__(self, directory: str | Path, seed: int, spec: OpenWebTextSpec | None = None, rank: int = 0):
        self.dir, self.seed, self.spec = Path(directory), seed, spec or OpenWebTextSpec()
        marker = self.dir / "prepared"
        if not marker.exists():
            if rank == 0:
                self.prepare()
                marker.write_text("ok\n")
            while not marker.exists():
                time.sleep(10)

    def prepare(self) -> None:
        from datasets import load_dataset
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.spec.tokenizer)
        eot = tok.eos_token_id
        ds = load_dataset(self.spec.hub_id, num_proc=self.spec.num_proc)["train"]
        parts = ds.train_test_split(test_size=self.spec.val_fraction, seed=2357, shuffle=True)

        def encode(example):
            ids = tok(example["text"], add_special_tokens=False)["input_ids"] + [eot]
            return {"ids": ids, "len": len(ids)}

        self.dir.mkdir(parents=True, exist_ok=True)
        for split, part in (("train", parts["train"]), ("val", parts["test"])):
            part = part.map(encode, remove_columns=["text"], num_proc=self.spec.num_proc, desc=f"tokenise {split}")
            total = int(np.sum(part["len"], dtype=np.uint64))
            with atomic_path(self.dir / f"{split}.bin") as tmp:
                arr = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(total,))
                at, shards = 0, 1024
                for i in range(shards):
                    chunk = np.concatenate(
                        part.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")["ids"]
                    )
                    arr[at : at + len(chunk)] = chunk
                    at += len(chunk)
                arr.flush()
                del arr

    def batch(self, split: str, index: int, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.memmap(self.dir / ("val.bin" if split == "val" else "train.bin"), dtype=np.uint16, mode="r")
        salt = {"train": 0, "val": 1, "probe": 2}[split]
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + salt) * 1_000_003 + index) % (2**63))
        ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=g).tolist()
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y


DATA = dict(zip(DATA_NAMES, (BackcopyBatches, OpenWebTextBatches)))  # a training run's data, by name (DATA_NAMES)


def batches(
    data: str,
    seed: int,
    backcopy: BackcopySpec | None = None,
    openwebtext: OpenWebTextSpec | None = None,
    directory: str | Path = "cache/train/openwebtext",
    rank: int = 0,
):
    """The batches of a training run's `data` (a name of DATA): Bigram-Backcopy with the task `backcopy`,
    or OpenWebText from `openwebtext`, tokenised once into `directory`.

    >>> batches("backcopy", seed=1).batch("val", 0, batch_size=2, block_size=8)[0].shape
    torch.Size([2, 8])
    """
    if data == "backcopy":
        return BackcopyBatches(backcopy or BackcopySpec(), seed)
    if data == "openwebtext":
        return OpenWebTextBatches(directory, seed, openwebtext, rank)
    raise ValueError(f"data={data!r} is not one of {', '.join(DATA)}")
