"""``mcsdns`` as a user runs it: a subprocess, its exit status, its one-line errors, and dig."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "clusterset"
MCSDNS = [sys.executable, "-m", "mcsdns"]


def run(args: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCSDNS, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@contextmanager
def serving(
    args: Sequence[str], *, env: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    process = subprocess.Popen(
        [*MCSDNS, "serve", "--listen", "127.0.0.1:0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    try:
        assert process.stderr is not None
        port = 0
        for line in process.stderr:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            if "serving zone serial" in line or '"serving zone serial' in line:
                break
        assert port, "the server logs where it listens"
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


def ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=2)


def test_version() -> None:
    result = run(["version"])
    assert result.returncode == 0 and re.fullmatch(r"mcsdns \d+\.\d+\.\d+\n", result.stdout)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(["serve", "--bogus"], {}, "unrecognized arguments: --bogus", id="unknown-flag"),
        pytest.param(
            ["serve", "--manifests", str(EXAMPLES), "--ttl", "9999"],
            {},
            "--ttl: 9999 is outside 0..3600",
            id="ttl-out-of-range",
        ),
        pytest.param(
            ["serve", "--manifests", str(EXAMPLES), "--listen", "localhost:53"],
            {},
            "--listen: 'localhost' is not an IP address",
            id="listen-not-an-ip",
        ),
        pytest.param(
            ["serve", "--manifests", "/nonexistent"],
            {},
            "--manifests: '/nonexistent' is not a directory",
            id="manifests-missing",
        ),
        pytest.param(
            ["serve", "--manifests", str(EXAMPLES)],
            {"MCSDNS_TTL": "soon"},
            "MCSDNS_TTL: 'soon' is not a whole",
            id="bad-environment",
        ),
        pytest.param(
            ["serve", "--config", "/nonexistent.yaml"],
            {},
            "--config /nonexistent.yaml: No such file",
            id="config-missing",
        ),
        pytest.param(
            ["serve"],
            {},
            "no zone source: give --manifests DIR, --kubeconfig PATH or --cloudmap true",
            id="no-source",
        ),
        pytest.param([], {}, "the following arguments are required: COMMAND", id="no-command"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = run(args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcsdns: error: ") and message in lines[0], result.stderr


def test_bad_config_file_content(tmp_path: Path) -> None:
    config = tmp_path / "mcsdns.yaml"
    config.write_text("zone: clusterset.local\nttl: [1, 2]\n")
    result = run(["serve", "--config", str(config), "--manifests", str(EXAMPLES)])
    assert result.returncode == 2 and "key ttl: expects a single value" in result.stderr
    config.write_text("tll: 5\n")
    result = run(["serve", "--config", str(config)])
    assert result.returncode == 2 and "unknown setting 'tll'" in result.stderr


def test_serves_the_example_like_the_readme_says() -> None:
    with serving(["--manifests", str(EXAMPLES)]) as (port, _):
        reply = ask(port, "nginx-hello.demo.svc.clusterset.local")
        assert [r.to_text() for r in reply.answer[0]] == ["172.20.179.134"]
        result = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(port), "+short", "nginx-hello.demo.svc.clusterset.local"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert result.stdout.strip() == "172.20.179.134"


def test_sigterm_exits_cleanly() -> None:
    with serving(["--manifests", str(EXAMPLES)]) as (_, process):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_flag_beats_environment_beats_config(tmp_path: Path) -> None:
    config = tmp_path / "mcsdns.yaml"
    config.write_text(f"manifests: {EXAMPLES}\nttl: 60\nlog-format: json\n")
    name = "nginx-hello.demo.svc.clusterset.local"
    with serving(["--config", str(config)]) as (port, _):
        assert ask(port, name).answer[0].ttl == 60
    with serving(["--config", str(config)], env={"MCSDNS_TTL": "30"}) as (port, _):
        assert ask(port, name).answer[0].ttl == 30
    with serving(["--config", str(config), "--ttl", "10"], env={"MCSDNS_TTL": "30"}) as (port, _):
        assert ask(port, name).answer[0].ttl == 10


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    with serving(["--manifests", str(EXAMPLES), "--log-format", "json"]) as (_, process):
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=10)
    for line in rest.strip().splitlines():
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys()


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run(["serve", "--manifests", str(EXAMPLES), "--listen", f"127.0.0.1:{port}"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mcsdns: error: cannot listen on udp 127.0.0.1:{port}: Address already in use"
    )
