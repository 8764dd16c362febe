"""environment.yml lists the same packages, with the same bounds, as pyproject's pip install."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda's name for a PyPI package


def _split(spec: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip())
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def pip_specs() -> dict[str, str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(proj["dependencies"])
    for extra in proj["optional-dependencies"].values():
        specs += extra
    return dict(_split(s) for s in specs)


def conda_specs() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for s in dep["pip"]:
                if not s.startswith("-e"):
                    n, b = _split(s)
                    out[n] = b
        else:
            n, b = _split(dep.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=]", dep) else dep)
            if n in ("python", "pip"):
                continue
            out[CONDA_NAMES.get(n, n)] = b
    return out


def test_environment_yml_equals_pip_extras():
    pip, conda = pip_specs(), conda_specs()
    assert sorted(set(pip) - set(conda)) == [], "in pyproject, missing from environment.yml"
    assert sorted(set(conda) - set(pip)) == [], "in environment.yml, missing from pyproject"
    for name in pip:
        assert pip[name] == conda[name], f"{name}: pyproject {pip[name]!r} vs environment.yml {conda[name]!r}"


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
