"""examples/quickstart.py runs top to bottom in a fresh Python process: on a tiny model with a
planted massive activation, it finds it, prints a compact table, measures perplexity with and
without the interventions, and saves its figure only when asked (--out)."""

import re
import subprocess
import sys

import tiny
from helpers import REPO

LAYER, DIM = 1, 7
A = 66  # the byte tokenizer's id of "a": the token that carries the planted activation


def test_quickstart_finds_the_planted_activation(tmp_path):
    path = tiny.save(tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, token_id=A, gain=2000.0), tmp_path / "hf")
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n\n".join(f"document {i}: summer is warm, winter is cold, spring is a season." for i in range(40))
    )
    out = tmp_path / "figure.png"
    proc = subprocess.run(
        [
            sys.executable,
            "examples/quickstart.py",
            "--model",
            path,
            "--texts",
            str(texts),
            "--out",
            str(out),
            "--seq-len",
            "32",
            "--n",
            "4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    assert "4 sequences x 32 tokens" in stdout
    assert f"in dim(s) [{DIM}]" in stdout and f"emerging after block {LAYER}" in stdout, stdout
    ppl = {
        m.group(1): float(m.group(2).replace(",", ""))
        for m in re.finditer(r"^  (none|zero|mean)\s+([\d.,]+)", stdout, re.M)
    }
    assert set(ppl) == {"none", "zero", "mean"}, stdout
    assert all(v > 1 for v in ppl.values())
    changed = re.search(r"^  zero .*\((\d+) entries changed after block (\d+)\)", stdout, re.M)
    assert changed and int(changed.group(1)) > 0 and int(changed.group(2)) == LAYER, stdout
    assert out.is_file() and out.stat().st_size > 0 and out.read_bytes()[:4] == b"\x89PNG"
    # a compact table: the blocks around the emergence, 3 significant digits, not every layer with 6 decimals
    table = stdout[stdout.index(" block   median") : stdout.index("perplexity,")].splitlines()
    numbers = re.findall(r"[\d,.]+", "\n".join(table[1:]))
    assert len(table) <= 8 and all(
        len(n.replace(",", "").lstrip("0.").replace(".", "")) <= 3 or "." not in n for n in numbers
    ), table
    assert re.search(rf"^\s+{LAYER}\s", "\n".join(table), re.M), table


def test_quickstart_writes_nothing_unless_asked(tmp_path):
    path = tiny.save(tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, token_id=A, gain=2000.0), tmp_path / "hf")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(f"document {i}: summer is warm, winter is cold." for i in range(40)))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples/quickstart.py"),
            "--model",
            path,
            "--texts",
            str(texts),
            "--seq-len",
            "32",
            "--n",
            "2",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "figure: not saved (--out fig.png saves it)" in proc.stdout
    assert list(work.iterdir()) == []
