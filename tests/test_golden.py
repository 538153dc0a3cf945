"""The tables of a tiny whole-DAG run equal those stored before the library refactor
(tests/fixtures/golden/, written by `python tests/golden.py`): same columns, same dtypes, same
values, bit for bit."""

import pandas as pd
import pytest

import golden


@pytest.mark.slow
def test_tiny_dag_tables_equal_the_stored_ones(tmp_path):
    got = golden.tables(golden.run_dag(tmp_path))
    want = golden.tables(golden.FIXTURE)
    assert sorted(got) == sorted(want)
    for rel, value in want.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[rel].reset_index(drop=True), value, check_exact=True, obj=rel)
        else:
            assert got[rel] == value, rel
