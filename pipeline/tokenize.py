"""Rule tokenize: N sequences of seq_len tokens from a seeded sample of the corpus.

The paper's protocol: sample documents with the config's seed, join them with blank lines,
tokenise without special tokens, and cut the token stream into consecutive chunks of seq_len;
keep the first tokenize.num_sequences. Output: results/<model>/<corpus>/tokens.parquet with
columns seq_id and input_ids.

For images (data.kind image_wheel / image_folder) the model's own image processor plays the
tokenizer: tokenize.num_sequences images of the corpus (a seeded sample, all when it has fewer) become rows of seq_id,
image_id, label, pixel_values (flattened float32) and shape ([3, H, W]).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline import cli, images
from pipeline.cli import PipelineError
from pipeline.config import is_images
from pipeline.io import corpus_file, read_table, tokens_file, write_table
from pipeline.model import hf_dir, load_tokenizer, max_positions

log = logging.getLogger(__name__)


def seq_len(cfg: DictConfig) -> int:
    return cfg.tokenize.seq_len or cfg.model.seq_len


def check_seq_len(cfg: DictConfig) -> int:
    """seq_len, after checking it against the model's maximum number of positions."""
    from transformers import AutoConfig

    n = seq_len(cfg)
    limit = max_positions(AutoConfig.from_pretrained(hf_dir(cfg), trust_remote_code=cfg.model.trust_remote_code))
    if limit is not None and n > limit:
        raise PipelineError(f"seq_len={n} is above the maximum positions of {cfg.model.name!r} ({limit})")
    return n


def sample_text(docs: list[str], cfg: DictConfig) -> str:
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(docs))[: cfg.tokenize.num_documents]
    return cfg.tokenize.separator.join(docs[i] for i in order)


def chunk(ids: list[int], n: int, count: int) -> list[list[int]]:
    return [ids[i * n : (i + 1) * n] for i in range(min(count, len(ids) // n))]


def image_rows(cfg: DictConfig) -> pd.DataFrame:
    table = images.sample(read_table(corpus_file(cfg)), cfg.tokenize.num_sequences, cfg.seed)
    processor = images.load_processor(hf_dir(cfg), cfg.model.trust_remote_code)
    pixels = images.preprocess(processor, table["path"].tolist())
    return pd.DataFrame({"seq_id": range(len(table)), "image_id": table["image_id"].to_numpy(), "label": table["label"].to_numpy(),
                         "pixel_values": list(pixels.flatten(1).numpy()), "shape": [list(pixels.shape[1:])] * len(table)})


def run(cfg: DictConfig) -> None:
    if is_images(cfg.data):
        write_table(image_rows(cfg), tokens_file(cfg), cfg)
        return
    n = check_seq_len(cfg)
    docs = read_table(corpus_file(cfg))["text"].tolist()
    if not docs:
        raise PipelineError(f"corpus {cfg.data.name!r} is empty")
    tok = load_tokenizer(cfg)
    ids = tok(sample_text(docs, cfg), add_special_tokens=cfg.tokenize.add_special_tokens)["input_ids"]
    seqs = chunk(ids, n, cfg.tokenize.num_sequences)
    if not seqs:
        raise PipelineError(f"corpus {cfg.data.name!r} has {len(ids)} tokens, fewer than one sequence of seq_len={n}")
    if len(seqs) < cfg.tokenize.num_sequences:
        log.warning("corpus %s gives only %d of %d sequences of %d tokens", cfg.data.name, len(seqs), cfg.tokenize.num_sequences, n)
    write_table(pd.DataFrame({"seq_id": range(len(seqs)), "input_ids": seqs}), tokens_file(cfg), cfg)


if __name__ == "__main__":
    cli.main("tokenize", run)
