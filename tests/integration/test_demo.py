"""``mcsdns demo``, as README's first command runs it: the seed tutorial's results on one machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_the_tutorial_and_cls2_answers_its_vip() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcsdns", "demo", "--port", "0", "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in (
        "Cloud Map namespace",
        "Cloud Map instances",
        "ServiceImport in cls2",
        "derived Service in cls2",
        "EndpointSlice in cls2",
        "ServiceExport status in cls1",
    ):
        assert f"## {heading}" in out
    assert out.count("InstanceId: tcp-10_10_") == 3
    cls2 = re.search(r"from cls2 \(127\.0\.0\.1:\d+\): (\S+)", out)
    cls1 = re.search(r"from cls1 \(127\.0\.0\.1:\d+\): (\S+)", out)
    assert cls2 and cls2.group(1).startswith("172.20."), out
    assert cls1 and cls1.group(1).startswith("10.100."), out
    assert f"- {cls2.group(1)}" in out, "the ServiceImport in cls2 carries that VIP in spec.ips"
