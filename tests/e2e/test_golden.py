"""The tables of the tiny whole-DAG run equal those stored before the library refactor
(tests/fixtures/golden/, written by `python tests/golden.py`): same files, columns, dtypes and
shapes; integers, strings and booleans exactly; floats within RTOL/ATOL.

Floats get a tolerance because CI runs on whichever CPU it is given (an Intel Xeon here, while the
fixture was written on an AMD EPYC): the same code sums in another order there, and a few statistics
differ in their last bits (attention/decomposition.parquet's rel_std in 2% of its rows, equal to 6
decimals). RTOL 1e-5 is ~80 float32 ulps: far above that noise, far below any change a refactor could
make on purpose. Two runs on one machine are compared byte for byte by tests/e2e/test_reproducible.py.

The run is the shared tiny DAG (conftest.tiny_dag, TINY_SWEEP), not a run of its own: TINY_SWEEP
holds the golden sweep (tiny_random on news_sample, ablation at emerge and all, attention, the ViT),
so every fixture table is one of its tables, the sweep-wide ablation tables restricted to the
fixture's rows.
"""

import math

import numpy as np
import pandas as pd
import pytest

import golden

RTOL, ATOL = 1e-5, 1e-7  # floats; everything else exactly
SWEEP_FILES = {
    "ablation_golden.parquet": "ablation_sweep.parquet",
    "ablation_golden_regrowth.parquet": "ablation_sweep_regrowth.parquet",
}


def close(a, b) -> bool:
    """Equal, floats within RTOL/ATOL (NaN equals NaN), recursively through lists, arrays and dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            return False
        if a.dtype.kind == "f":
            return np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
        if a.dtype.kind == "O":
            return all(close(x, y) for x, y in zip(a.ravel(), b.ravel()))
        return np.array_equal(a, b)
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or pd.isna(a)) and (b is None or pd.isna(b))
    return type(a) is type(b) and a == b


def assert_table_close(got: pd.DataFrame, want: pd.DataFrame, rel: str) -> None:
    assert list(got.columns) == list(want.columns), rel
    assert got.dtypes.astype(str).tolist() == want.dtypes.astype(str).tolist(), rel
    assert got.shape == want.shape, rel
    for col in want.columns:
        a, b = got[col].to_numpy(), want[col].to_numpy()
        if want[col].dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=f"{rel}: {col}")
        elif want[col].dtype.kind == "O":
            bad = [i for i, (x, y) in enumerate(zip(a, b)) if not close(x, y)]
            assert not bad, f"{rel}: {col}, row {bad[0]}: {a[bad[0]]!r} != {b[bad[0]]!r}"
        else:
            assert np.array_equal(a, b), f"{rel}: {col}"  # integers, booleans, datetimes: exactly


@pytest.mark.slow
def test_tiny_dag_tables_equal_the_stored_ones(tiny_dag):
    got = golden.tables(tiny_dag / "results")
    want = golden.tables(golden.FIXTURE)
    for rel, value in want.items():
        mine = SWEEP_FILES.get(rel, rel)
        assert mine in got, f"{mine} missing from the tiny DAG's results"
        if isinstance(value, pd.DataFrame):
            table = got[mine]
            if rel in SWEEP_FILES:  # the sweep's table: the fixture's (model, corpus) rows, in their order
                keep = table.set_index(["model", "corpus"]).index.isin(value.set_index(["model", "corpus"]).index)
                table = table[keep] if len(value) else table[table["corpus"] == "news_sample"]
            assert_table_close(table.reset_index(drop=True), value.reset_index(drop=True), rel)
        else:
            assert close(got[mine], value), rel


def test_the_comparison_has_a_tolerance_for_floats_only():
    a = pd.DataFrame({"n": [1, 2], "s": ["x", "y"], "f": [1.0, 2.0], "ids": [[1, 2], [3]]})
    assert_table_close(a.assign(f=[1.0 + 1e-9, 2.0]), a, "t")  # last bits of a float: equal
    for changed in (
        a.assign(f=[1.001, 2.0]),
        a.assign(n=[1, 3]),
        a.assign(s=["x", "z"]),
        a.assign(ids=[[1, 2], [4]]),
        a.iloc[:1],
    ):
        with pytest.raises(AssertionError):
            assert_table_close(changed, a, "t")
    assert close({"a": 1.0, "b": [1, None]}, {"a": 1.0 + 1e-9, "b": [1, None]})
    assert not close({"a": 1}, {"a": 1.0}) and not close({"a": "x"}, {"a": "y"})


def test_the_tiny_sweep_holds_the_golden_sweep():
    from helpers import TINY_SWEEP

    g, t = golden.SWEEP, TINY_SWEEP
    assert set(g["models"]) <= set(t["models"]) and set(g["corpora"]) <= set(t["corpora"])
    assert g["overrides"] == t["overrides"] and g["attention"] == t["attention"] and g["vision"] == t["vision"]
    assert (
        g["ablate"]["interventions"] == t["ablate"]["interventions"] and g["ablate"]["layers"] == t["ablate"]["layers"]
    )
