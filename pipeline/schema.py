"""Hydra schema nodes made from the library's own dataclasses and registries: one definition per parameter.

The library (massive/) defines each parameter once, with its default, in the dataclass of its concept
(massive.retrain.gpt.GPTConfig, massive.retrain.training.TrainSpec, ...) and each set of allowed names
once, as a registry (massive.retrain.gpt.VARIANTS, INITS, ...). The pipeline's config schema is built
from them, so a new library field is a config key, with the library's default, without a second edit:

    >>> from massive.retrain.gpt import GPTConfig, INITS
    >>> Init = choices("Init", INITS)
    >>> Arch = node(GPTConfig, "Arch", drop=("variant", "model_type"), enums={"init": Init})
    >>> Arch().n_layer, Arch().init
    (12, <Init.gpt2: 'gpt2'>)

A value outside a registry is then rejected by Hydra at compose time, as any enum value is.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from enum import Enum
from typing import Iterable, Mapping


class Named(str, Enum):
    """A config enum whose members are a registry's names."""

    def __str__(self) -> str:  # "attn_bias", not "Variant.attn_bias", in interpolated paths
        return self.value


def choices(name: str, names: Iterable[str]) -> type[Named]:
    """An enum of the names of a library registry (a tuple or a dict's keys): Hydra accepts these only.

    >>> list(choices("Decay", ("matrices", "all", "none")))
    [<Decay.matrices: 'matrices'>, <Decay.all: 'all'>, <Decay.none: 'none'>]
    """
    module = sys._getframe(1).f_globals["__name__"]  # the caller's (pipeline.config): pickled members resolve there
    return Named(name, {n: n for n in names}, module=module)


def node(source: type, name: str, *, drop: Iterable[str] = (), enums: Mapping[str, type[Enum]] | None = None) -> type:
    """A dataclass with `source`'s fields (names, types, defaults, in its order) but those in `drop`
    (keys the pipeline sets from elsewhere); a field named in `enums` takes that enum as its type, so
    Hydra rejects a value outside it. Subclass it to add the pipeline's own keys after the library's.

    >>> from massive.retrain.backcopy import BackcopySpec
    >>> [f.name for f in dataclasses.fields(node(BackcopySpec, "B", drop=("task_seed",)))][:3]
    ['vocab_size', 'n_triggers', 'alpha']
    """
    enums, drop = dict(enums or {}), set(drop)
    known = {f.name for f in dataclasses.fields(source)}
    unknown = sorted((drop | set(enums)) - known)
    if unknown:
        raise TypeError(f"{source.__qualname__} has no field {unknown[0]!r}")
    hints = typing.get_type_hints(source)
    specs = []
    for f in dataclasses.fields(source):
        if f.name in drop:
            continue
        kind = enums.get(f.name, hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = kind(f.default) if f.name in enums else f.default
            specs.append((f.name, kind, dataclasses.field(default=default)))
        elif f.default_factory is not dataclasses.MISSING:
            specs.append((f.name, kind, dataclasses.field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, kind, dataclasses.field(default="???")))  # Hydra's MISSING: the config must set it
    cls = dataclasses.make_dataclass(name, specs)
    cls.__module__ = __name__
    cls.__doc__ = f"{source.__module__}.{source.__qualname__}'s fields as a schema node" + (
        f" (but {', '.join(sorted(drop))})" if drop else ""
    )
    return cls


def library_fields(source: type, drop: Iterable[str] = ()) -> dict[str, object]:
    """{field: default} of a library dataclass, without `drop` (the test that a node keeps them all)."""
    out = {}
    for f in dataclasses.fields(source):
        if f.name in set(drop):
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def default_of(fn, name: str):
    """The default of keyword `name` of library function `fn`: a config key of a function that has no
    config dataclass takes its default from there.

    >>> from massive.measure.detect import detect
    >>> default_of(detect, "massive_max_share")
    0.5
    """
    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise TypeError(f"{fn.__qualname__}'s {name!r} has no default")
    return value
