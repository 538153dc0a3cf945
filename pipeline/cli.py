"""The one entry point every pipeline module shares.

`python -m pipeline.<rule> key=value ...` composes conf/config.yaml with Hydra's compose API,
validates it against the schema in pipeline/config.py, checks every value that can be checked
against the fetched model's config before anything is loaded (pipeline/checks.py), runs the
rule, and only then writes the composed config to `hydra.run.dir/.hydra/` (derived from the
model and corpus names, never from the clock), so a failed run leaves an earlier good run's
record as it was. An error in the input (massive.core.errors.MassiveError, a Hydra or OmegaConf
error) ends the process with one line naming the bad value and exit code 2; any other
exception is a bug and shows its traceback. The rule itself writes its outputs atomically, so
a failure leaves none behind.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from massive.core.errors import MassiveError
from pipeline.config import check_overrides, check_values, register

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("pipeline")


def compose(overrides: list[str] | None = None, config_name: str = "config", with_hydra: bool = False) -> DictConfig:
    """Compose the config (also used by the tests). Raises on unknown keys and bad values.

    The `hydra` node (run dir and the like) is kept only when `with_hydra` is set.

    Hydra composes the defaults list (config groups such as `model=...`, `hydra.searchpath`) once
    per process for each distinct set of those overrides; the value overrides (`capture.top_k=8`)
    are then applied to a copy by Hydra's own override step, as its compose does after the
    defaults. A sweep's check composes dozens of configs that differ only in values: ~0.015 s each
    instead of ~0.15 s."""
    overrides = list(overrides or [])
    values = [] if with_hydra else _value_overrides(overrides)
    if values is None:  # an override Hydra itself must see (a sweep value, say): the whole compose
        cfg = _hydra_compose(overrides, config_name, with_hydra)
    else:
        import copy

        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        groups = tuple(o for o in overrides if o not in {v.input_line for v in values})
        key = (config_name, groups)
        if key not in _BASES:
            _BASES[key] = _hydra_compose(list(groups), config_name, with_hydra)
        cfg = copy.deepcopy(_BASES[key])
        if values:
            try:
                ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
            except Exception as exc:  # as Hydra's compose reports it: a ConfigCompositionException
                from hydra.errors import ConfigCompositionException

                if isinstance(exc, ConfigCompositionException):
                    raise
                raise ConfigCompositionException(str(exc)) from exc
    check_values(cfg)
    return cfg


_BASES: dict[tuple, DictConfig] = {}  # (config name, defaults-list overrides) -> composed config, unchecked


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def _value_overrides(overrides: list[str]):
    """The overrides that set a value of the composed config (`section.key=value`, `seed=2`: any
    key that is not a config group of conf/), or None when one of them is something only a whole
    compose handles (a sweep over values, a package)."""
    from hydra.errors import HydraException

    try:
        parsed = _parse(overrides)
    except HydraException:
        return None  # let Hydra's compose say it
    values = []
    for o in parsed:
        key = o.key_or_group
        if o.is_sweep_override() or o.package is not None:
            return None
        if o.is_delete() or o.is_add() or o.is_force_add() or key == "hydra" or key.startswith("hydra."):
            continue  # a deletion, a new key, the search path: part of the defaults list
        if (CONF_DIR / key.replace(".", "/")).is_dir():
            continue  # a config group (model=..., data=..., train=...)
        values.append(o)
    return values


def _hydra_compose(overrides: list[str], config_name: str, with_hydra: bool) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=with_hydra)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, with its cause's first line where it has one."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0]
    key = next((ln for ln in lines[1:] if ln.startswith("full_key:")), None)
    if key:
        first = f"{first} ({key})"
    if exc.__cause__ is not None and str(exc.__cause__).strip():
        first = f"{first.rstrip('.')}: {one_line(exc.__cause__)}"
    return first


NO_SEQUENCES = ("fetch_model", "fetch_corpus", "ablation", "report")  # rules of no single model's token sequences


def resolve_protocol(cfg: DictConfig, stage: str) -> None:
    """Resolve the run's sequence protocol (model.bos with the tokenizer) before the rule runs, so
    every table it writes records it, and `model.bos=always` without a BOS token fails first.
    Skipped for images, for the rules of no single model's sequences, and while the model is not
    fetched (the rule says so itself)."""
    from pipeline.config import is_images
    from pipeline.io import model_dir
    from pipeline.model import MARKER, protocol

    if stage in NO_SEQUENCES or is_images(cfg.data) or not (model_dir(cfg) / MARKER).is_file():
        return
    protocol(cfg)


def write_run_record(run_dir: Path, cfg: DictConfig, argv: list[str]) -> None:
    """The composed config and the overrides of a successful run, in run_dir/.hydra/ (atomically)."""
    from massive.core.files import atomic_dir

    with atomic_dir(run_dir / ".hydra") as tmp:
        OmegaConf.save(cfg, tmp / "config.yaml")
        OmegaConf.save(OmegaConf.create({"overrides": list(argv), "run_dir": str(run_dir)}), tmp / "overrides.yaml")


def write_manifest(run_dir: Path, text: str) -> None:
    """The settings that made a keyed stage's outputs (pipeline.stages.manifest), beside them."""
    from massive.core.files import atomic_path
    from pipeline.paths import MANIFEST

    with atomic_path(run_dir / MANIFEST) as tmp:
        tmp.write_text(text)


def main(
    stage: str, run: Callable[[DictConfig], None], argv: list[str] | None = None, config_name: str = "config"
) -> None:
    """Compose, validate, check against the fetched model, and call `run(cfg)`; map input errors
    to one line and exit 2; on success record the composed config in hydra.run.dir/.hydra/."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    try:
        check_overrides(argv)
        cfg = compose([f"stage={stage}", *argv], config_name=config_name, with_hydra=True)
        run_dir = Path(cfg.hydra.run.dir)
        with open_dict(cfg):
            del cfg["hydra"]
        keyed = None
        if config_name == "config":
            from pipeline.checks import preflight
            from pipeline.stages import STAGES, manifest, manifest_text

            if stage in STAGES:  # its record and settings go beside its outputs, in its keyed folder
                from pipeline.io import run_dir as keyed_dir

                run_dir, keyed = keyed_dir(cfg, stage), manifest_text(manifest(cfg, stage))

            preflight(cfg, stage)
            resolve_protocol(cfg, stage)
        run(cfg)
        write_run_record(run_dir, cfg, argv)
        if keyed is not None:
            write_manifest(run_dir, keyed)
    except (MassiveError, HydraException, OmegaConfBaseException) as exc:
        if os.environ.get("PIPELINE_FULL_ERROR"):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a full disk outside pipeline.io's atomic writes (a checkpoint, W&B, a library's cache)
        from massive.core.files import disk_full, is_disk_full

        if not is_disk_full(exc) or os.environ.get("PIPELINE_FULL_ERROR"):
            raise
        print(f"error: {disk_full(exc.filename or Path.cwd())}", file=sys.stderr)
        sys.exit(2)
