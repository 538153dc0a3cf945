"""Result objects saved to and loaded from a folder, as the files the pipeline writes.

    stats.save("out/capture")                  # layer_stats.parquet, topk.parquet, dim_max.parquet
    stats = Capture.load("out/capture")
    found.save("out/detect")                   # massive, summary, per_layer, outliers .parquet + summary.json
    found = Detection.load("results/smollm2_135m/wiki_sample/detect/6b9ac1e6")   # a pipeline run's
    AttentionTables.load("results/smollm2_135m/wiki_sample/attention/2c4e6a8b").heads   # the other rules' (Tables)

Every Parquet file carries, in its schema metadata under `massive`, what the object needs beyond its
tables (a capture's count thresholds, a detection's k and thresholds); `meta` adds more (the
pipeline's provenance: config, git commit, packages, seed). Writes are atomic (massive/core/files.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from massive.core.errors import MassiveError
from massive.core.files import atomic_path

KEY = "massive"  # the schema metadata key of the object's own fields
CAPTURE_TABLES = ("layer_stats", "topk", "dim_max")
DETECTION_TABLES = ("massive", "summary", "per_layer", "outliers")
SUMMARY_JSON = "summary.json"


def write_parquet(df: pd.DataFrame, path: str | Path, meta: dict[str, str] | None = None) -> Path:
    """`df` as Parquet, atomically, with `meta` (str -> str) in its schema metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in (meta or {}).items()})
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(merged), tmp)
    return Path(path)


def read_parquet(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A table and the object fields stored with it (KEY); a missing file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise MassiveError(f"{path} is missing (save the result there first, or run the rule that writes it)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:  # truncated, overwritten, not Parquet
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise MassiveError(
            f"{path} is not a readable Parquet file ({first}): delete it and save it again "
            "(or rerun the rule that writes it)"
        ) from None
    own = (table.schema.metadata or {}).get(KEY.encode())
    return table.to_pandas(), (json.loads(own) if own else {})


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def save_capture(stats: Any, folder: str | Path, meta: dict[str, str] | None = None) -> Path:
    folder = Path(folder)
    own = {
        KEY: json.dumps({"thresholds": stats.thresholds, "vision": bool(stats.vision)}, sort_keys=True),
        **(meta or {}),
    }
    for name in CAPTURE_TABLES:
        df = getattr(stats, name)
        if df is not None:
            write_parquet(df, folder / f"{name}.parquet", own)
    return folder


def load_capture(folder: str | Path, cls: type) -> Any:
    """A `cls` (massive.measure.capture.Capture, which calls this) from the files of `folder`."""
    folder = Path(folder)
    layer_stats, own = read_parquet(folder / "layer_stats.parquet")
    topk, _ = read_parquet(folder / "topk.parquet")
    dim_max = read_parquet(folder / "dim_max.parquet")[0] if (folder / "dim_max.parquet").is_file() else None
    return cls(
        layer_stats=layer_stats,
        topk=topk,
        dim_max=dim_max,
        vision=bool(own.get("vision", False)),
        thresholds=own.get("thresholds"),
    )


def save_detection(
    found: Any, folder: str | Path, meta: dict[str, str] | None = None, summary_extra: dict | None = None
) -> Path:
    """The tables and summary.json ({**result, n_layers, k, **summary_extra}: the pipeline adds the
    model, corpus and protocol)."""
    folder = Path(folder)
    own = {
        KEY: json.dumps(
            {"k": found.k, "capped": bool(found.capped), "thresholds": dict(found.thresholds)},
            sort_keys=True,
            default=float,
        ),
        **(meta or {}),
    }
    for name in DETECTION_TABLES:
        write_parquet(getattr(found, name), folder / f"{name}.parquet", own)
    write_json(
        {**found.result, "n_layers": found.n_layers, "k": found.k, **(summary_extra or {})}, folder / SUMMARY_JSON
    )
    return folder


def load_detection(folder: str | Path, cls: type, k: int | None = None, thresholds: dict | None = None) -> Any:
    """A `cls` (massive.measure.detect.Detection, which calls this) from `folder` (`k`, `thresholds`: where the
    files predate their metadata)."""
    folder = Path(folder)
    if not (folder / SUMMARY_JSON).is_file():
        raise MassiveError(
            f"{folder / SUMMARY_JSON} is missing (save the detection there first, or run the detect rule)"
        )
    result = json.loads((folder / SUMMARY_JSON).read_text())
    n_layers, saved_k = result.pop("n_layers", None), result.get("k")
    result = {key: v for key, v in result.items() if key not in ("model", "corpus", "k")}
    tables, own = {}, {}
    for name in DETECTION_TABLES:
        if name == "outliers" and not (folder / "outliers.parquet").is_file():
            continue
        tables[name], meta = read_parquet(folder / f"{name}.parquet")
        own = own or meta
    return cls(
        **tables,
        result=result,
        n_layers=n_layers,
        k=own.get("k", k if k is not None else saved_k),
        capped=bool(own.get("capped", result.get("saturated"))),
        thresholds=own.get("thresholds", thresholds or {}),
    )


# ---------------------------------------------------------------- the other rules' results: named tables (+ summary.json)
class Tables:
    """A result that is named tables and, for some, a JSON record (`result`, as Detection's): what one
    rule writes, saved to and loaded from a folder as that rule's files (<name>.parquet, summary.json).
    Each subclass names its tables (TABLES) and whether it has the record (SUMMARY); the tables are
    attributes.

        >>> res = AttentionTables(heads=h, layers=l, decomposition=d, perplexity=p, result={"sink_1_share": 0.8})
        >>> res.save("out/attention")                       # heads.parquet, ..., summary.json
        >>> AttentionTables.load("results/smollm2_135m/wiki_sample/attention/1a2b3c4d").result["sink_1_share"]
    """

    TABLES: tuple[str, ...] = ()
    SUMMARY = False

    def __init__(self, result: dict | None = None, **tables: pd.DataFrame):
        missing = [n for n in self.TABLES if n not in tables]
        extra = [n for n in tables if n not in self.TABLES]
        if missing or extra:
            raise MassiveError(
                f"{type(self).__name__} holds the tables {', '.join(self.TABLES)}; "
                + (f"missing: {', '.join(missing)}" if missing else f"unknown: {', '.join(extra)}")
            )
        if self.SUMMARY and result is None:
            raise MassiveError(f"{type(self).__name__} needs its result (summary.json)")
        self.tables, self.result = dict(tables), result

    def __getattr__(self, name: str):
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {len(t)} rows" for n, t in self.tables.items())
        return f"{type(self).__name__}({shapes}{', result' if self.result is not None else ''})"

    @classmethod
    def files(cls) -> tuple[str, ...]:
        """The files `save` writes (the rule's outputs besides its figures)."""
        return tuple(f"{n}.parquet" for n in cls.TABLES) + ((SUMMARY_JSON,) if cls.SUMMARY else ())

    def save(self, folder: str | Path, meta: dict[str, str] | None = None) -> Path:
        """Every table as <folder>/<name>.parquet (`meta`: schema metadata, the pipeline's provenance)
        and the result as summary.json, each atomically."""
        folder = Path(folder)
        for name in self.TABLES:
            write_parquet(self.tables[name], folder / f"{name}.parquet", meta)
        if self.SUMMARY:
            write_json(self.result, folder / SUMMARY_JSON)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Tables":
        """The result saved in `folder` (a pipeline run's keyed folder, or `save`'s); a missing file is one line."""
        folder = Path(folder)
        result = None
        if cls.SUMMARY:
            if not (folder / SUMMARY_JSON).is_file():
                raise MassiveError(
                    f"{folder / SUMMARY_JSON} is missing (save the result there first, or run the rule that writes it)"
                )
            result = json.loads((folder / SUMMARY_JSON).read_text())
        return cls(result=result, **{n: read_parquet(folder / f"{n}.parquet")[0] for n in cls.TABLES})


class AblateTables(Tables):
    """Rule ablate (massive.intervene.ablation, massive.measure.regrowth): perplexity with intervals per intervention, regrowth per block."""

    TABLES = ("perplexity", "regrowth")


class ZeroshotTables(Tables):
    """Rule zeroshot (massive.intervene.zeroshot): accuracy per task and intervention."""

    TABLES = ("zeroshot",)


class ImagesTables(Tables):
    """Rule ablate_images (massive.vision.vit): accuracy and attention per intervention on image data."""

    TABLES = ("images",)


class AttentionTables(Tables):
    """Rule attention (massive.measure.attention.analyse): per head, per layer, the decomposition, perplexities; summary.json."""

    TABLES = ("heads", "layers", "decomposition", "perplexity")
    SUMMARY = True


class OriginsTables(Tables):
    """Rule origins (massive.measure.origins.find): the writing sublayers, the super weights, perplexities."""

    TABLES = ("sublayers", "superweights", "perplexity")


class RetrofitTables(Tables):
    """Rule retrofit (massive.retrain.retrofit): the arms' curves, per-layer shares and summary rows."""

    TABLES = ("curves", "layers", "summary")


class InferenceTables(Tables):
    """Rule inference (massive.inference.precision, quantize, window): headroom, quantization, windows; summary.json."""

    TABLES = ("headroom", "quantization", "window")
    SUMMARY = True


# the result of each keyed stage besides capture and detect (pipeline/stages.py): its saved form
STAGE_TABLES = {
    "ablate": AblateTables,
    "zeroshot": ZeroshotTables,
    "ablate_images": ImagesTables,
    "attention": AttentionTables,
    "origins": OriginsTables,
    "retrofit": RetrofitTables,
    "inference": InferenceTables,
}
