"""The library's errors.

`MassiveError` is an error in what the caller asked for (a bad value, a missing file, a model the
library cannot take apart): the pipeline's command line reports it as one line and exit code 2.
Every other exception is a bug and keeps its traceback.

    >>> from massive.core.errors import MassiveError, check_finite
    >>> check_finite(3.2, "perplexity of 'zero'")
    3.2
"""

from __future__ import annotations

import math


class MassiveError(Exception):
    """An error in the caller's input, reported as one line."""


class NonFiniteError(MassiveError):
    """A statistic, loss or perplexity that came out inf or NaN: never a table row or a verdict."""


DTYPE_HINT = "run the model in float32 or bfloat16 (float16 overflows above 65,504)"


def check_finite(value: float, where: str, dtype: object | None = None) -> float:
    """`value`, or a NonFiniteError naming `where` (and the dtype, with a hint) when it is inf or NaN."""
    if not math.isfinite(value):
        at = f" (dtype {str(dtype).replace('torch.', '')}; {DTYPE_HINT})" if dtype is not None else ""
        raise NonFiniteError(f"{where} is {value}{at}")
    return value
