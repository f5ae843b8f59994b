"""The locks in requirements/ are what every install path uses, and they agree with pyproject.toml's ranges
and with each other: a fresh machine gets exactly what CI tested (README, "Locked installs")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("runtime", "demo", "test")
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+?)(?: ; (.+?))? \\$", re.M)


def pins(lock: str) -> dict[str, str]:
    """name -> version of the pins of ``requirements/<lock>.txt`` that apply to this interpreter."""
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    found = {}
    for name, version, marker in PIN.findall(text):
        if not marker or Requirement(f"x; {marker}").marker.evaluate():  # type: ignore[union-attr]
            found[canonicalize_name(name)] = version
    return found


def project() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = data["optional-dependencies"]
    return {
        "runtime": data["dependencies"],
        "demo": data["dependencies"] + extras["demo"],
        "test": data["dependencies"] + extras["demo"] + extras["test"] + extras["bench"],
    }


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_hashes(lock: str) -> None:
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    requirements = [b for b in blocks if "==" in b.splitlines()[0]]
    assert len(requirements) > 10
    for block in requirements:
        assert "--hash=sha256:" in block, block.splitlines()[0]
        assert not block.startswith("-e "), "the project itself is installed apart, with --no-deps"


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_satisfies_every_range_pyproject_declares(lock: str) -> None:
    locked = pins(lock)
    env = default_environment()
    for line in project()[lock]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in ("mcsdns", "mcsdns-sandbox"):
            continue  # this repository's own packages, installed apart (editable, no dependencies)
        if requirement.marker and not requirement.marker.evaluate(env):  # type: ignore[arg-type]
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock}.txt lacks {requirement.name}: run .ci/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock}.txt pins {name}=={locked[name]}, outside {requirement}: run .ci/lock"
        )
    assert {"setuptools", "wheel"} <= locked.keys(), "the locked build backend for --no-build-isolation"


def test_a_package_has_one_version_in_every_lock() -> None:
    everything = pins("test")
    for lock in ("runtime", "demo"):
        for name, version in pins(lock).items():
            assert everything.get(name) == version, (
                f"{name}: {lock}.txt {version}, test.txt {everything.get(name)}"
            )
    assert pins("runtime").keys() < pins("demo").keys() < everything.keys()


def test_every_install_path_installs_through_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    first_command = next(
        line.strip() for line in readme.splitlines() if line.startswith("    python3 -m venv")
    )
    assert "pip install --require-hashes -r requirements/demo.txt" in first_command
    assert "pip install --no-deps --no-build-isolation -e . -e ./sandbox" in first_command
    assert first_command.endswith("mcsdns demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes -r requirements/test.txt" in ci
    assert "--no-deps --no-build-isolation -e . -e ./sandbox" in ci
    installs = [
        line for line in ci.splitlines() if "pip install" in line and not line.lstrip().startswith("#")
    ]
    assert len(installs) == 2, installs
    assert "requirements/runtime.txt" in (ROOT / "Dockerfile").read_text()
