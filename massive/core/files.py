"""Atomic writes: a file or folder appears whole, or not at all (what the library's I/O
functions and the pipeline's rules write goes through here).

    >>> with atomic_path("out/table.parquet") as tmp:
    ...     df.to_parquet(tmp)          # renamed to out/table.parquet only if this succeeds
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from massive.core.errors import MassiveError


def is_disk_full(exc: BaseException) -> bool:
    """An OSError (or pyarrow's, whose errno is only in the text) that says the device is full."""
    text = str(exc)
    return isinstance(exc, OSError) and (
        exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "Disk quota exceeded" in text
    )


def disk_full(path: str | Path) -> MassiveError:
    """The one-line error for a full disk (or quota) while writing `path`."""
    return MassiveError(
        f"no space left on the device writing {path}: free some space (or point paths.cache / "
        f"paths.results elsewhere) and rerun; nothing was replaced"
    )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds.
    A full disk is a MassiveError naming `path` (the earlier file, if any, stays)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp)
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def link(src: Path, dest: Path) -> None:
    """dest becomes src's content, atomically (a hard link where the file system allows, else a copy)."""
    with atomic_path(dest) as tmp:
        try:
            tmp.unlink()
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
