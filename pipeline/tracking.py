"""Weights & Biases logging: one run per stage, grouped by sweep, typed by stage.

The mode is wandb.mode when the config sets it (offline, online, disabled), else the environment's
WANDB_MODE, else offline (`mode`). Offline runs land in wandb/ under the working directory;
`wandb sync wandb/offline-run-*` uploads them later. Parquet files under results/ stay the source of
truth: W&B gets copies of metrics, tables and figures for browsing, so tracking never fails a rule.
An online run that cannot start within INIT_TIMEOUT seconds (no network, no API key) continues
offline, and any later W&B error (a log call, finishing the run) is one warning line on stderr
(`warn`), not an exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.io import git_commit, package_versions, root
from pipeline.names import plain

if TYPE_CHECKING:
    import wandb

INIT_TIMEOUT = float(
    os.environ.get("WANDB_INIT_TIMEOUT", 10)
)  # seconds an online run may take to start before the rule continues offline
MODES = ("offline", "online", "disabled")
log = logging.getLogger(__name__)
_warned: set[str] = set()


def warn(what: str, exc: BaseException | None = None) -> None:
    """One line on stderr, once per message: `warning: wandb: <what>: <the error's first line>`."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0] if exc is not None else ""
    line = f"warning: wandb: {what}" + (f" ({type(exc).__name__}: {detail[:200]})" if exc is not None else "")
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr, flush=True)


def mode(cfg: DictConfig) -> str:
    """wandb.mode when set, else $WANDB_MODE (offline, online, disabled; W&B's dryrun = offline), else offline."""
    configured = plain(cfg.wandb.mode)
    if configured is not None:
        return configured
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    env = {"dryrun": "offline", "run": "online"}.get(env, env)
    if env and env not in MODES:
        warn(f"WANDB_MODE={env!r} is not one of {', '.join(MODES)}: offline")
    return env if env in MODES else "offline"


class _Safe:
    """A W&B run whose log and summary calls never raise: an error is one warning line (the tables are written)."""

    def __init__(self, run):
        self._run = run

    def log(self, data: dict, *args, **kwargs) -> None:
        try:
            self._run.log({k: v for k, v in data.items() if v is not None}, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking is a copy: never fail the rule
            warn("logging failed, the rule's tables are written", exc)

    @property
    def summary(self):
        run = self

        class Summary:
            def update(self, values: dict) -> None:
                try:
                    run._run.summary.update(values)
                except Exception as exc:  # noqa: BLE001
                    warn("summary update failed, the rule's tables are written", exc)

        return Summary()

    def __getattr__(self, name):
        return getattr(self._run, name)


def _init(wandb, kwargs: dict, run_mode: str):
    """wandb.init in `run_mode`; an online run that fails or times out continues offline, then disabled."""
    tries = {"online": ["online", "offline", "disabled"], "offline": ["offline", "disabled"]}.get(
        run_mode, ["disabled"]
    )
    for m in tries:
        try:
            return wandb.init(mode=m, settings=wandb.Settings(init_timeout=INIT_TIMEOUT), **kwargs)
        except Exception as exc:  # noqa: BLE001 - CommError, UsageError (no API key), a timeout, ...
            nxt = "offline" if m == "online" else "disabled"
            warn(f"{m} run failed to start; continuing {nxt} (results are unaffected)", exc)
    raise RuntimeError("unreachable")  # disabled mode does not fail


class _Disabled:
    """The run of `wandb.mode=disabled`: every call a no-op, and W&B is never imported (about 0.4 s of each
    job's start; the tests and any run without tracking)."""

    def log(self, data: dict, *args, **kwargs) -> None:
        pass

    @property
    def summary(self):
        return self

    def update(self, values: dict) -> None:
        pass


_disabled = False  # True inside a disabled stage_run: table/image/wandb_html return None without W&B


@contextlib.contextmanager
def stage_run(cfg: DictConfig, name: str | None = None) -> Iterator["wandb.sdk.wandb_run.Run"]:
    global _disabled
    if mode(cfg) == "disabled":
        _disabled = True
        try:
            yield _Disabled()
        finally:
            _disabled = False
        return
    import wandb

    wandb_dir = root(cfg)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    config = OmegaConf.to_container(cfg, resolve=True)
    config["git_commit"] = git_commit()
    config["packages"] = package_versions()
    run = _init(
        wandb,
        dict(
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            group=os.environ.get("WANDB_RUN_GROUP") or cfg.sweep_name,  # the Snakefile sets it to the sweep
            job_type=cfg.stage,
            name=name or f"{cfg.stage}/{cfg.model.name}/{cfg.data.name}",
            config=config,
            dir=str(wandb_dir),
            reinit="finish_previous",
        ),
        mode(cfg),
    )
    try:
        yield _Safe(run)
    finally:
        try:
            run.finish()
        except Exception as exc:  # noqa: BLE001
            warn("finishing the run failed, the rule's tables are written", exc)


def table(df: pd.DataFrame):
    """A W&B table of `df`. Missing values W&B's type check refuses become ones it takes: a nullable
    integer column (detect's fade_layer: a layer, or null when it lasts to the final block) becomes
    float with NaN, other nullable or mixed columns objects with None. A table W&B still refuses is a
    warning line and None (`_Safe.log` leaves it out): the Parquet table is the source of truth."""
    if _disabled:
        return None
    import wandb

    df = df.reset_index(drop=True).copy()
    for col in df.columns:
        dtype = df[col].dtype
        if (
            isinstance(dtype, pd.api.extensions.ExtensionDtype)
            and pd.api.types.is_numeric_dtype(dtype)
            and not pd.api.types.is_bool_dtype(dtype)
        ):
            df[col] = df[col].astype("float64")
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) or dtype == object:
            values = [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in df[col]]
            kinds = {type(v) for v in values if v is not None}
            if kinds and all(issubclass(k, (int, float)) and not issubclass(k, bool) for k in kinds) and None in values:
                values = [float("nan") if v is None else float(v) for v in values]
            elif len(kinds) > 1:
                values = [None if v is None else str(v) for v in values]
            df[col] = pd.Series(values, index=df.index, dtype=object)
    try:
        return wandb.Table(dataframe=df)
    except Exception as exc:  # noqa: BLE001 - tracking is a copy: never fail the rule
        warn("a table was left out of the run", exc)
        return None


def image(path: str | Path):
    if _disabled:
        return None
    import wandb

    return wandb.Image(str(path))


def wandb_html(path: str | Path):
    if _disabled:
        return None
    import wandb

    return wandb.Html(Path(path).read_text())
