"""What tests/unit/test_config_library.py and tests/rules/test_config.py share: the model and corpus configs
under conf/."""

from pipeline.cli import CONF_DIR

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
CORPORA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
