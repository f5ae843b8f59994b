"""The product wheel holds the product: mcsdns's own modules, and none of the test doubles (the sandbox is a
distribution of its own, sandbox/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_no_sandbox_file(tmp_path: Path) -> None:
    # Built from a copy of what the Dockerfile builds from, so no build/ left in the checkout can leak in.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mcsdns", source / "mcsdns", ignore=shutil.ignore_patterns("__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", str(tmp_path), "."], cwd=source, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("mcsdns-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {name for name in names if name.endswith(".py")}
    assert {
        "mcsdns/cli.py",
        "mcsdns/dns/server.py",
        "mcsdns/zone/build.py",
        "mcsdns/clients/kube.py",
    } <= modules
    assert not [name for name in names if "sandbox" in name or "kubeapi" in name or "moto" in name], names
    assert all(name.startswith(("mcsdns/", "mcsdns-")) for name in names), names
