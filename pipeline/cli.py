"""The one entry point every pipeline module shares.

`python -m pipeline.<rule> key=value ...` composes conf/config.yaml with Hydra's compose API,
validates it against the schema in pipeline/config.py, writes the composed config to
`hydra.run.dir` (derived from the model and corpus names, never from the clock) and runs the
rule. Any error in the input ends the process with one line naming the bad value and exit
code 2; the rule itself writes its outputs atomically, so a failure leaves none behind.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.config import check_values, register

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """An error in the user's input: reported as one line, exit code 2."""


def compose(overrides: list[str] | None = None, config_name: str = "config", with_hydra: bool = False) -> DictConfig:
    """Compose the config (also used by the tests). Raises on unknown keys and bad values.

    The `hydra` node (run dir and the like) is kept only when `with_hydra` is set."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=with_hydra)
    check_values(cfg)
    return cfg


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message, with its cause's first line where it has one."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0]
    key = next((ln for ln in lines[1:] if ln.startswith("full_key:")), None)
    if key:
        first = f"{first} ({key})"
    if exc.__cause__ is not None and str(exc.__cause__).strip():
        first = f"{first.rstrip('.')}: {_one_line(exc.__cause__)}"
    return first


def main(stage: str, run: Callable[[DictConfig], None], argv: list[str] | None = None, config_name: str = "config") -> None:
    """Compose, validate, and call `run(cfg)`; map input errors to one line and exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = compose([f"stage={stage}", *argv], config_name=config_name, with_hydra=True)
        run_dir = Path(cfg.hydra.run.dir)
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        hydra_node = cfg.hydra
        with open_dict(cfg):
            del cfg["hydra"]
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create({"overrides": list(argv), "run_dir": str(hydra_node.run.dir)}), run_dir / ".hydra" / "overrides.yaml")
        run(cfg)
    except (PipelineError, HydraException, OmegaConfBaseException, ValueError, FileNotFoundError) as exc:
        if os.environ.get("PIPELINE_FULL_ERROR"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)

