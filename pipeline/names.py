"""Names that become paths: one check, called wherever a config is composed.

A model, corpus, sweep, training run or hub revision name ends up as a folder or file name
(results/<model>/<corpus>/, cache/models/<model>/, results/report_<sweep>.html,
results/train/<train.name>/). Each must be one safe path component: letters, digits, `_`, `.`,
`-` (and one `@` in a model name, for runs such as gpt2@bos or pythia_160m@step1000), not
starting with `.` or `-`, so it can neither leave the working directory (`../../victim`), nor
hide (`.x`), nor read as an option or a shell word. `check` raises a MassiveError naming the
key; pipeline.config.check_values calls it for every composed config, pipeline.sweep.load for
the sweep's own name, so `python -m pipeline.<rule>` and `snakemake -n` refuse a bad name
before anything is written.

    >>> check("model.name", "gpt2@bos")
    'gpt2@bos'
    >>> check("data.name", "../../escaped")
    MassiveError: data.name='../../escaped' is not a safe name ...
"""

from __future__ import annotations

import re

from massive.core.errors import MassiveError

SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
# model.name: gpt2, a protocol run gpt2@bos, a revision run pythia_160m@step1000
SAFE_RUN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}(?:@[A-Za-z0-9_][A-Za-z0-9_.-]{0,199})?")
RULE = "letters, digits, _ . - (not first: . -), at most 200 characters"


def plain(value):
    """A config value as plain Python: an Enum's value (Hydra composes Dtype, SourceKind, ... as
    Enums), anything else as it is; the one place the pipeline unwraps them.

        >>> plain(Dtype.float16), plain(4)
        ('float16', 4)
    """
    return getattr(value, "value", value)


def check(key: str, value, run: bool = False) -> str:
    """`value` when it is one safe path component, else a MassiveError naming `key` (run: one `@<protocol or revision>` allowed)."""
    text = str(value)
    if not (SAFE_RUN if run else SAFE).fullmatch(text):
        raise MassiveError(
            f"{key}={text!r} is not a safe name: it becomes a path, so it may hold only {RULE}"
            + (" and one @<protocol or revision>" if run else "")
        )
    return text
