"""Dependencies are declared once: pyproject pins them, environment.yml installs that package,
and CI runs the README's test command verbatim."""

import re
import tomllib

import yaml

from helpers import REPO


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_pyproject_pins_every_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    unpinned = [d for d in deps if "==" not in d]
    assert not unpinned, unpinned
    assert "torch==2.13.0" in project["dependencies"]


def test_environment_yml_installs_the_same_package():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=")[1]
    low, high = re.findall(r"[\d.]+", project["requires-python"])
    assert tuple(map(int, low.split("."))) <= tuple(map(int, version.split("."))) < tuple(map(int, high.split(".")))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # the package itself, nothing pinned a second time that could disagree with pyproject
    assert pip == ["-e .[gpu,zeroshot]"], pip
    names = {re.split(r"[=<>\[ ]", d)[0] for d in project["dependencies"]}
    conda_pkgs = {re.split(r"[=<> ]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert conda_pkgs <= {"python", "pip"}, conda_pkgs - {"python", "pip"}
    assert names  # the pinned list lives in pyproject alone


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    setup, test = readme_commands()
    assert "snakemake" in setup and "pip install" in setup
    assert "pytest" in test
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert test in ci, "CI must run the README's test command verbatim"
