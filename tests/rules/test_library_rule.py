"""The shape of the project: the library imports no Hydra, OmegaConf or W&B; no module imports
in a cycle; rule modules are thin and import no other rule module; the public API documents
itself."""

import subprocess
import sys

from helpers import REPO


def test_library_imports_no_hydra_omegaconf_or_wandb():
    code = (
        "import sys, massive, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(massive.__path__, 'massive.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'wandb', 'pipeline'))\n"
        "print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"the library loaded {proc.stdout.strip()}"
