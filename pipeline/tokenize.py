"""Rule tokenize: N sequences of seq_len tokens from a seeded sample of the corpus
(massive.core.sequences.sequences, the paper's protocol).

Sample tokenize.num_documents documents with the config's seed, join them with
tokenize.separator (blank lines), tokenise, cut the token stream into consecutive chunks of
seq_len (tokenize.seq_len, or the model's), each beginning as model.bos says (with a BOS: the BOS
then seq_len - 1 text tokens; pipeline.model.protocol), and keep the first tokenize.num_sequences. Output: results/<model>/<corpus>/tokens.parquet with columns
seq_id and input_ids. seq_len is checked against the model's maximum positions before anything
is loaded (pipeline/checks.py).

For images (data.kind image_wheel / image_folder) the model's own image processor plays the
tokenizer: tokenize.num_sequences images of the corpus (a seeded sample, all when it has fewer)
become rows of seq_id, image_id, label, pixel_values (flattened float32) and shape ([3, H, W]).
"""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig

from massive.core.errors import MassiveError
from massive.core.sequences import sequences
from pipeline import cli
from pipeline.checks import seq_len
from pipeline.config import is_images
from pipeline.io import corpus_file, read_table, tokens_file, write_table

log = logging.getLogger(__name__)


def image_rows(cfg: DictConfig) -> pd.DataFrame:
    from massive.vision import images
    from pipeline.model import hf_dir

    table = images.sample(read_table(corpus_file(cfg)), cfg.tokenize.num_sequences, cfg.seed)
    processor = images.load_processor(hf_dir(cfg), cfg.model.trust_remote_code)
    pixels = images.preprocess(processor, table["path"].tolist())
    return pd.DataFrame(
        {
            "seq_id": range(len(table)),
            "image_id": table["image_id"].to_numpy(),
            "label": table["label"].to_numpy(),
            "pixel_values": list(pixels.flatten(1).numpy()),
            "shape": [list(pixels.shape[1:])] * len(table),
        }
    )


def run(cfg: DictConfig) -> None:
    from pipeline.model import load_tokenizer, protocol

    if is_images(cfg.data):
        write_table(image_rows(cfg), tokens_file(cfg), cfg)
        return
    n, t = seq_len(cfg), cfg.tokenize
    docs = read_table(corpus_file(cfg))["text"].tolist()
    if not docs:
        raise MassiveError(f"corpus {cfg.data.name!r} is empty")
    tok = load_tokenizer(cfg)
    try:
        ids = sequences(
            tok,
            docs,
            seq_len=n,
            n=t.num_sequences,
            seed=cfg.seed,
            num_documents=t.num_documents,
            separator=t.separator,
            protocol=protocol(cfg, tok),
        )
    except MassiveError as exc:
        raise MassiveError(f"corpus {cfg.data.name!r}: {exc}") from None
    if len(ids) < t.num_sequences and not t.allow_fewer:
        raise MassiveError(
            f"corpus {cfg.data.name!r} gives only {len(ids)} of tokenize.num_sequences={t.num_sequences} "
            f"sequences of {n} tokens (from tokenize.num_documents={t.num_documents} documents): lower "
            f"tokenize.num_sequences, or set tokenize.allow_fewer=true to go on with {len(ids)}"
        )
    if len(ids) < t.num_sequences:
        log.warning(
            "corpus %s gives only %d of %d sequences of %d tokens (tokenize.allow_fewer=true)",
            cfg.data.name,
            len(ids),
            t.num_sequences,
            n,
        )
    write_table(pd.DataFrame({"seq_id": range(len(ids)), "input_ids": ids.tolist()}), tokens_file(cfg), cfg)


if __name__ == "__main__":
    cli.main("tokenize", run)
