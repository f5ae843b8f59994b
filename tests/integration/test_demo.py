"""``mcsdns demo``, as README's first command runs it: the seed tutorial's results on one machine."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "mcsdns", "demo", "--port", "0"]


def test_demo_shows_the_tutorial_and_cls2_answers_its_vip(tmp_path: Path) -> None:
    result = subprocess.run(
        [*DEMO, "--once"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"--kubeconfig {tmp_path}/mcsdns-demo-" in result.stdout, "its kubeconfigs were in TMPDIR"
    assert not list(tmp_path.iterdir()), "the demo removes its temporary directory when it is done"
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


def _demo_with(breakage: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    code = (
        _BREAK[breakage]
        + "import sys\nfrom mcsdns.cli import main\nsys.exit(main(['demo', '--port', '0', '--once']))\n"
    )
    # .ci/latest allows an unproven moto for the whole suite; this demo must see the gate as users do.
    env = {k: v for k, v in os.environ.items() if k != "MCSDNS_SANDBOX_ALLOW_UNPROVEN_MOTO"}
    env["TMPDIR"] = str(tmp)
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
def test_a_broken_part_stops_the_demo_at_once_and_is_named(
    breakage: str, message: str, tmp_path: Path
) -> None:
    result, seconds = _demo_with(breakage, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(message), result.stderr
    # Start-up (imports, two emulators) takes a second or two; the demo used to wait 30 s before saying why.
    assert seconds < 15, f"took {seconds:.1f} s"
    assert not list(tmp_path.iterdir()), "the demo removes its temporary directory when it fails"


class _Running:
    """A demo in the background, its stdout read line by line with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, text: str, *, more: int = 0) -> list[str]:
        """Every line up to the first holding ``text``, and ``more`` lines after it."""
        deadline = time.monotonic() + 90
        found = False
        while more >= 0:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in the demo's output:\n" + "\n".join(self.seen)) from None
            self.seen.append(line)
            found = found or text in line
            more -= found
        return self.seen


@contextmanager
def _demo(tmp: Path, *, kubectl: bool) -> Iterator[_Running]:
    """``mcsdns demo`` serving, TMPDIR in ``tmp``, and a PATH with (a stand-in for) kubectl or without."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    if kubectl:
        (bin_dir / "kubectl").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "kubectl").chmod(0o755)
    temp = tmp / "temp"
    temp.mkdir()
    process = subprocess.Popen(
        DEMO,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temp), "PATH": str(bin_dir), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield _Running(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("signum", "kubectl"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-no-kubectl", "ctrl-c-kubectl"],
)
def test_a_serving_demo_stops_on_a_signal_and_leaves_nothing(
    signum: signal.Signals, kubectl: bool, tmp_path: Path
) -> None:
    with _demo(tmp_path, kubectl=kubectl) as demo:
        out = demo.until("get serviceimports,svc,endpointslices -n demo", more=0 if kubectl else 2)
        assert list((tmp_path / "temp").glob("mcsdns-demo-*/cls2.kubeconfig")), "it serves from TMPDIR"
        hint = "\n".join(out[-3:])
        if kubectl:
            assert "kubectl is not installed" not in "\n".join(out)
        else:
            # The command is shown with a note that says it cannot run here, and what works instead.
            assert "(applied by the demo; kubectl is not installed here)" in "\n".join(out)
            assert "kubectl is not installed here; the emulated API answers plain HTTP without it:" in hint
            url = re.search(r"curl -s (\S+)\)$", out[-1])
            assert url, hint
            with urllib.request.urlopen(url.group(1), timeout=5) as response:
                imports = json.load(response)
            assert [i["metadata"]["name"] for i in imports["items"]] == ["nginx-hello"]
        demo.process.send_signal(signum)
        _, err = demo.process.communicate(timeout=30)
    assert demo.process.returncode == 0, err
    assert "Traceback" not in err and "never awaited" not in err, err
    assert not list((tmp_path / "temp").iterdir()), "the demo removes its temporary directory on a signal"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_demo_stopped_while_it_starts_leaves_nothing(signum: signal.Signals, tmp_path: Path) -> None:
    with _demo(tmp_path, kubectl=True) as demo:
        demo.until("Two clusters, one Cloud Map")  # the emulators run; the engines are starting
        demo.process.send_signal(signum)
        _, err = demo.process.communicate(timeout=30)
    assert demo.process.returncode == 128 + signum, err
    assert "Traceback" not in err and "never awaited" not in err, err
    assert not list((tmp_path / "temp").iterdir()), "the demo removes its temporary directory when stopped"


def test_the_printed_status_and_check_commands_work_on_the_serving_demo(tmp_path: Path) -> None:
    """What a new user does next: paste the `export AWS_...`, `mcsdns status` and `mcsdns check` lines the
    demo prints into another shell. check passes line by line; status shows the tutorial's service exported
    by cls1 and imported in cls2, with both clusters; a CRD deleted fails exactly its line."""
    process = subprocess.Popen(
        DEMO,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        demo = _Running(process)
        out = demo.until("and the preflight, from cls2", more=3)
        exports, status_line, check_line = (line.strip() for line in out[-3:])
        assert exports.startswith("export AWS_ENDPOINT_URL_SERVICEDISCOVERY=http://127.0.0.1:"), out[-4:]
        environment = dict(item.split("=", 1) for item in shlex.split(exports)[1:])
        assert {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(environment)
        assert environment["AWS_DISABLE_HOST_PREFIX_INJECTION"] == "true"
        # A shell of its own: none of this process's AWS settings, only what the demo printed.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | environment
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"

        def run(line: str) -> subprocess.CompletedProcess[str]:
            assert line.startswith("mcsdns "), line
            return subprocess.run(
                shlex.split(line),
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        check = run(check_line)
        assert check.returncode == 0, check.stdout + check.stderr
        results = check.stdout.splitlines()
        assert len(results) == 13 and all(line.startswith("✔") for line in results), check.stdout
        assert "✔ CoreDNS: `clusterset.local:53`" in check.stdout
        assert "✔ RBAC: system:serviceaccount:mcsdns-system:mcsdns may do all" in check.stdout

        status = run(status_line)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("clusterset clusterset-demo, seen from cluster cls2"), status.stdout
        assert "note:" not in status.stdout, status.stdout
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.strip()}
        assert "cls1" in rows and rows["cls2"][1] == "(this)", status.stdout
        service = rows["demo/nginx-hello"]
        assert service[1] == "ClusterSetIP" and service[2].startswith("172.20.") and service[3] == "cls1"
        assert service[-1] != "-", "imported in cls2: its ServiceImport has an age"

        # Break one prerequisite: the ServiceExport CRD deleted (as kubectl delete crd does).
        server = yaml.safe_load(Path(shlex.split(check_line)[3]).read_text())["clusters"][0]["cluster"][
            "server"
        ]
        crd = "serviceexports.multicluster.x-k8s.io"
        request = urllib.request.Request(
            f"{server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}", method="DELETE"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        broken = run(check_line)
        failed = [line for line in broken.stdout.splitlines() if line.startswith("✘")]
        assert broken.returncode == 1 and len(failed) == 1, broken.stdout
        assert failed[0].startswith(f"✘ CRD {crd}: not installed"), broken.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "Exception occurred" not in err, err
