"""What tests/unit/test_protocol.py and tests/rules/test_protocol_rule.py share: the sequences module and a
corpus with no '<s>' in its text."""

import importlib

seqs = importlib.import_module("massive.core.sequences")  # the module (massive.sequences is also the function's name)
DOCS = [" ".join(f"word{i}{j}." for j in range(30)) for i in range(40)]  # no "<s>" in the text: id 0 only as a BOS
