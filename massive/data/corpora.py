"""Reading documents: a MediaWiki dump, a text file (one document per line, or per blank-line
separated paragraph), or a Hugging Face dataset.

Text files are decoded strictly: a file that is not valid UTF-8 is an error naming the file and
the offset of its first bad byte, never text quietly altered with U+FFFD, unless the caller
names its encoding.

    >>> from massive.data import corpora
    >>> docs = corpora.text_documents("news.txt")                    # paragraphs
    >>> docs = corpora.line_documents("lee_background.cor")          # one per line
    >>> docs = corpora.text_documents("latin1.txt", encoding="latin-1")
    >>> docs = corpora.wiki_articles(Path("enwiki-pages-articles.xml.bz2"))
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from massive.core.errors import MassiveError


def read_text(path: str | Path, encoding: str | None = None) -> str:
    """The text of the file `path`: strict UTF-8, or `encoding` when given; line ends read as
    Python's text mode reads them ("\\r\\n" and "\\r" become "\\n").

        >>> read_text("notes.txt")
        'Summer is warm.\\n'
    """
    path = Path(path)
    if not path.is_file():
        raise MassiveError(f"{path} is not a file")
    data = path.read_bytes()
    try:
        text = data.decode(encoding or "utf-8")
    except LookupError:
        raise MassiveError(f"unknown encoding {encoding!r} for {path}") from None
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise MassiveError(
            f"{path} is not valid {encoding or 'UTF-8'}: byte 0x{bad} at offset {exc.start} "
            f"(name the file's encoding, e.g. encoding=latin-1)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def line_documents(path: str | Path, encoding: str | None = None) -> list[str]:
    """One document per line of a text file.

    >>> line_documents("lee_background.cor")[:1]
    ['Hundreds of people have been forced to vacate their homes ...']
    """
    return read_text(path, encoding).splitlines()


def text_documents(path: str | Path, encoding: str | None = None) -> list[str]:
    """The documents of a text file, separated by blank lines.

    >>> text_documents("two.txt")
    ['First document.', 'Second one.\\n']
    """
    return re.split(r"\n\s*\n", read_text(path, encoding))


def clean(text: str) -> str:
    """Collapse runs of blank lines and trailing spaces that stripped markup leaves behind.

    >>> clean("a  \\n\\n\\n\\nb ")
    'a\\n\\nb'
    """
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def wiki_articles(path: str | Path) -> list[str]:
    """Plain text of every article (namespace 0, no redirects) of a MediaWiki XML dump (.bz2),
    markup stripped by mwparserfromhell.

        >>> len(wiki_articles(Path("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")))
    """
    import mwparserfromhell
    from tqdm import tqdm

    path = Path(path)
    docs = []
    try:
        with bz2.open(path, "rb") as fh:
            for _, elem in tqdm(
                ET.iterparse(fh, events=("end",)), desc=f"parsing {path.name}", unit=" elements", mininterval=2
            ):
                if not elem.tag.endswith("}page"):
                    continue
                ns = elem.find("{*}ns")
                text = elem.find("{*}revision/{*}text")
                redirect = elem.find("{*}redirect")
                if ns is not None and ns.text == "0" and redirect is None and text is not None and text.text:
                    docs.append(clean(mwparserfromhell.parse(text.text).strip_code()))
                elem.clear()
    except (ET.ParseError, OSError, EOFError) as exc:  # not XML, not bz2, truncated
        raise MassiveError(
            f"cannot read the MediaWiki dump {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return docs


BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".jsonl.zst": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".csv": "csv",
}  # file ending -> datasets' packaged builder


def _builder(path: str) -> str:
    for ending, builder in sorted(BUILDERS.items(), key=lambda kv: -len(kv[0])):
        if path.endswith(ending):
            return builder
    raise MassiveError(f"cannot read {path!r}: no datasets builder for its file type (known: {', '.join(BUILDERS)})")


def hub_files(hub_id: str, patterns: list[str], revision: str | None = None) -> list[Path]:
    """The files of the dataset repository `hub_id` (at `revision`: a branch such as
    refs/convert/parquet, a tag or a commit) that match `patterns` (globs relative to the
    repository), downloaded once into the Hugging Face cache (huggingface_hub.snapshot_download;
    HF_HUB_OFFLINE=1 reads the cache alone), in sorted order.

        >>> hub_files("togethercomputer/RedPajama-Data-1T-Sample", ["*.jsonl"])[:1]
        [PosixPath('.../snapshots/<commit>/arxiv_sample.jsonl')]
    """
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(hub_id, repo_type="dataset", revision=revision, allow_patterns=list(patterns)))
    except Exception as exc:  # offline and not cached, gated, unknown repository or revision
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MassiveError(
            f"cannot download dataset {hub_id!r} (revision {revision or 'main'}) from the Hugging Face hub: "
            f"{type(exc).__name__}: {first}"
        ) from None
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise MassiveError(f"dataset {hub_id!r} (revision {revision or 'main'}) has no file matching {list(patterns)}")
    return files


def hub_documents(
    hub_id: str,
    config: str | None = None,
    split: str = "test",
    text_field: str = "text",
    max_documents: int = 5000,
    revision: str | None = None,
    data_files: list[str] | None = None,
    sample_seed: int | None = None,
) -> list[str]:
    """The first `max_documents` texts of a Hugging Face dataset; with `sample_seed`, a seeded random
    sample of `max_documents` texts of the whole dataset instead (reservoir sampling: every row is
    read once; the sample keeps the dataset's order), as the paper samples RedPajama.

    With `data_files` (globs of files in the repository, e.g. ["*.jsonl"] or
    ["default/*validation/*.parquet"] on revision refs/convert/parquet), those files are downloaded
    (hub_files) and read in order by the `datasets` builder of their type, file by file (so files
    whose other columns differ still read): the way for datasets whose repository holds a loading
    script, which `datasets` 4+ no longer runs. Without, the dataset's own configuration `config`
    and `split` are streamed.

        >>> docs = hub_documents("Salesforce/wikitext", data_files=["wikitext-2-raw-v1/test-*.parquet"], max_documents=100)
    """
    from tqdm import tqdm

    try:
        import datasets
    except ImportError:
        raise MassiveError("data.kind=hub needs the `datasets` package (pip install datasets)") from None
    if data_files:
        sources = [
            (
                f"{hub_id}/{f.name}",
                lambda f=f: datasets.load_dataset(_builder(f.name), data_files=[str(f)], split="train", streaming=True),
            )
            for f in hub_files(hub_id, list(data_files), revision)
        ]
    else:
        sources = [
            (hub_id, lambda: datasets.load_dataset(hub_id, config, split=split, revision=revision, streaming=True))
        ]
    import random

    docs, kept, seen = [], [], 0  # kept: (row index, text) of the reservoir when sampling
    rng = random.Random(sample_seed)
    bar = tqdm(
        desc=f"reading {hub_id}", total=None if sample_seed is not None else max_documents, unit=" docs", mininterval=2
    )
    try:
        for name, stream in sources:
            for row in stream():
                if text_field not in row:
                    raise MassiveError(
                        f"dataset {name!r} has no column {text_field!r} (columns: {', '.join(row)}); "
                        "set data.text_field"
                    )
                bar.update()
                if sample_seed is None:
                    docs.append(row[text_field])
                    if len(docs) >= max_documents:
                        return docs
                    continue
                if len(kept) < max_documents:
                    kept.append((seen, row[text_field]))
                elif (j := rng.randrange(seen + 1)) < max_documents:
                    kept[j] = (seen, row[text_field])
                seen += 1
        if sample_seed is not None:
            docs = [text for _, text in sorted(kept)]
    except MassiveError:
        raise
    except Exception as exc:  # offline, gated, unknown dataset, a file that does not parse
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MassiveError(f"cannot load dataset {hub_id!r} from the Hugging Face hub: {first}") from None
    finally:
        bar.close()
    return docs
