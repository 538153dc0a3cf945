"""What the parts of one split test file share (docs/testing.md): tests/topics/<topic>.py holds the
helpers, constants and fixtures of tests/unit/test_<topic>*.py and tests/rules/test_<topic>*.py (and e2e),
defined once; a test module imports them, and takes a fixture by naming it (`results = report.results`)."""
