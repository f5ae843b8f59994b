"""The fuzz targets (fuzz/README.md) replay their corpus clean: the seeds and every input a fuzzer found
that once failed (``fuzz/corpus/<target>/crash-*``), through the target's own checks. The crashes
themselves are plain tests in tests/unit/test_fuzz_findings.py; CI runs the fuzzers briefly
(``.ci/common.sh``, ``fuzz_briefly``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64 only (pyproject.toml)")

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("packet", "manifests", "cloudmap")


def target(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.{name}")


@pytest.mark.parametrize("name", TARGETS)
def test_the_corpus_replays_clean(name: str) -> None:
    files = sorted((ROOT / "fuzz" / "corpus" / name).iterdir())
    assert any(path.name.startswith("seed-") for path in files), "run fuzz/seeds.py"
    module = target(name)
    for path in files:
        module.one_input(path.read_bytes())
    for data in module.seeds().values():  # as this dnspython makes them, should it write them otherwise
        module.one_input(data)


def test_every_target_has_a_corpus_and_a_brief_run_in_ci() -> None:
    assert sorted(
        p.stem for p in (ROOT / "fuzz").glob("*.py") if p.stem not in ("__init__", "seeds")
    ) == sorted(TARGETS)
    assert sorted(p.name for p in (ROOT / "fuzz" / "corpus").iterdir()) == sorted(TARGETS)
    common = (ROOT / ".ci" / "common.sh").read_text()
    assert f"for target in {' '.join(TARGETS)}; do" in common
    for script in ("run", "latest"):
        assert "\nfuzz_briefly .venv" in (ROOT / ".ci" / script).read_text(), script
