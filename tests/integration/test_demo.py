"""``mcsdns demo``, as README's first command runs it: the seed tutorial's results on one machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


_BREAK = {
    "cloudmap": (
        "from mcsdns_sandbox.cloudmap import motoapi\n"
        "def broken(backend, params):\n"
        "    raise AttributeError(\"'Namespace' object has no attribute 'to_json'\")\n"
        "motoapi.OPERATIONS['ListNamespaces'] = broken\n"
    ),
    "cluster": (
        "from mcsdns_sandbox.kubeapi import handlers\n"
        "def broken(self, request):\n"
        "    raise KeyError('resourceVersion')\n"
        "handlers.ApiApp._dispatch = broken\n"
    ),
    "moto-version": (
        "from mcsdns_sandbox.cloudmap import motoapi\nmotoapi.PROVEN_MOTO_VERSIONS = ('5.0.0',)\n"
    ),
}


def _demo_with(breakage: str) -> tuple[subprocess.CompletedProcess[str], float]:
    code = (
        _BREAK[breakage]
        + "import sys\nfrom mcsdns.cli import main\nsys.exit(main(['demo', '--port', '0', '--once']))\n"
    )
    # .ci/latest allows an unproven moto for the whole suite; this demo must see the gate as users do.
    env = {k: v for k, v in os.environ.items() if k != "MCSDNS_SANDBOX_ALLOW_UNPROVEN_MOTO"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            "cloudmap",
            "mcsdns: error: the embedded Cloud Map failed: "
            "ListNamespaces: AttributeError: 'Namespace' object has no attribute 'to_json'",
        ),
        ("cluster", "mcsdns: error: the emulated cluster cls1 failed: GET /api/v1/namespaces: KeyError:"),
        ("moto-version", "mcsdns: error: the embedded Cloud Map was proven on moto 5.0.0, and moto"),
    ],
)
def test_a_broken_part_stops_the_demo_at_once_and_is_named(breakage: str, message: str) -> None:
    result, seconds = _demo_with(breakage)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(message), result.stderr
    # Start-up (imports, two emulators) takes a second or two; the demo used to wait 30 s before saying why.
    assert seconds < 15, f"took {seconds:.1f} s"
