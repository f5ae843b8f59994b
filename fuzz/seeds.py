"""Write every target's seed corpus: ``fuzz/corpus/<target>/seed-<name>`` from the target's ``seeds()``.

Run after changing a ``seeds()`` function (tests/unit/test_fuzz.py fails until the files match):

    .venv/bin/python fuzz/seeds.py
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("packet", "manifests", "cloudmap")


def main() -> None:
    sys.path.insert(0, str(HERE))
    for target in TARGETS:
        corpus = HERE / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        for stale in corpus.glob("seed-*"):
            stale.unlink()
        seeds = importlib.import_module(target).seeds()
        for name, data in seeds.items():
            (corpus / f"seed-{name}").write_bytes(data)
        print(f"{corpus.relative_to(HERE.parent)}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
