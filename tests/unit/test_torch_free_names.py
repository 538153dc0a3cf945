"""The torch-free homes of the names the config reads (massive.intervene.registry, massive.core.dtypes,
massive.retrain.train_spec, ...) agree with the torch code that implements them, and the public API
(`import massive`, loaded on first use) gives the same objects as their home modules."""

from __future__ import annotations

import importlib

import massive
from massive.core import arch, dtypes
from massive.intervene import interventions, registry
from massive.measure import origins
from massive.retrain import train_spec

batches = importlib.import_module("massive.retrain.training.batches")  # (training.batches is also a function)


def test_the_built_in_interventions_are_the_registered_ones():
    registered = {name for name, fn in registry.INTERVENTIONS.items() if fn.__module__ == interventions.__name__}
    assert registered == set(registry.BUILT_IN)
    built_in_weights = {name for name, fn in registry.WEIGHT_INTERVENTIONS.items() if fn.__module__ == origins.__name__}
    assert built_in_weights == set(registry.KINDS)
    assert (
        interventions.INTERVENTIONS is registry.INTERVENTIONS
        and origins.WEIGHT_INTERVENTIONS is registry.WEIGHT_INTERVENTIONS
    )


def test_the_names_match_their_implementations():
    assert tuple(arch.DTYPES) == dtypes.DTYPE_NAMES
    assert all(dtypes.torch_dtype(name) is dtype for name, dtype in arch.DTYPES.items())
    assert tuple(batches.DATA) == train_spec.DATA_NAMES


def test_the_public_api_is_every_name_from_its_home():
    for name in massive.__all__:
        home = importlib.import_module(massive._HOMES[name])
        assert getattr(massive, name) is getattr(home, name), name
    assert callable(massive.intervene) and massive.arch is arch  # the function, not the sub-package
    assert massive.errors.MassiveError is massive.MassiveError and massive.hooks.hooked is massive.hooked
