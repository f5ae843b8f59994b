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
from dataclasses import dataclass, field
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


def kubeconfig(*, cluster: str = "", user: str = "token: abc", current: str = "current-context: x") -> str:
    """A kubeconfig of one cluster, user and context, with ``cluster`` and ``user`` fields as given."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"{cluster}}}}}]\n'
        f"users: [{{name: u, user: {{{user}}}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        f"{current}\n"
    )


@dataclass(frozen=True)
class Failure:
    """One way `mcsdns serve` (or `demo`) can fail before it is up, and the one line it must print.

    In ``args`` and file contents, ``{tmp}`` is the test's directory, ``{udp}`` a port whose UDP socket is
    taken, ``{tcp}`` a port whose TCP socket is taken (its UDP twin free). ``says``: what the line holds,
    the setting first, then the cause.
    """

    args: tuple[str, ...]
    status: int
    says: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


SERVE = ("serve", "--listen", "127.0.0.1:0")
MANIFESTS = (*SERVE, "--manifests", str(EXAMPLES))
KUBE = (*SERVE, "--kubeconfig", "{tmp}/kubeconfig")
CLOUDMAP = (*SERVE, "--cloudmap", "true", "--aws-region", "us-west-2")
NO_AWS = {  # nothing for boto3 to find: no files, and no instance metadata (no packet leaves the host)
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
NOT_PEM = "this is not PEM\n"

FAILURES = {
    # usage: exit 2
    "no-command": Failure((), 2, ("the following arguments are required: COMMAND",)),
    "unknown-flag": Failure(("serve", "--bogus"), 2, ("unrecognized arguments: --bogus",)),
    "no-source": Failure(
        ("serve",), 2, ("no zone source: give --manifests DIR, --kubeconfig PATH or --cloudmap",)
    ),
    "ttl-out-of-range": Failure((*MANIFESTS, "--ttl", "9999"), 2, ("--ttl: 9999 is outside 0..3600",)),
    "listen-not-an-ip": Failure(
        (*MANIFESTS, "--listen", "localhost:53"), 2, ("--listen: 'localhost' is not an IP address",)
    ),
    "listen-port-too-big": Failure(
        (*MANIFESTS, "--listen", "127.0.0.1:99999"), 2, ("--listen: 99999 is outside 0..65535",)
    ),
    "http-not-an-address": Failure(
        (*MANIFESTS, "--http", "nowhere"), 2, ("--http: 'nowhere' is not HOST:PORT",)
    ),
    "log-level-unknown": Failure(
        (*MANIFESTS, "--log-level", "loud"), 2, ("--log-level: 'loud' is not one of",)
    ),
    "manifests-missing": Failure(
        (*SERVE, "--manifests", "/nonexistent"), 2, ("--manifests: '/nonexistent' is not a directory",)
    ),
    "manifests-a-file": Failure(
        (*SERVE, "--manifests", "{tmp}/file"), 2, ("--manifests: ", "is not a directory"), files={"file": ""}
    ),
    "dns-off-without-the-controller": Failure(
        (*MANIFESTS, "--dns=false"),
        2,
        ("--dns=false leaves only the controller, which needs --kubeconfig PATH and --cloudmap",),
    ),
    "state-dir-a-file": Failure(
        (*MANIFESTS, "--state-dir", "{tmp}/file"),
        2,
        ("--state-dir: ", "is not a directory"),
        files={"file": ""},
    ),
    "state-dir-under-a-file": Failure(
        (*MANIFESTS, "--state-dir", "{tmp}/file/state"),
        1,
        ("--state-dir: cannot use ", "Not a directory"),
        files={"file": ""},
    ),
    "kubeconfig-missing": Failure(
        (*SERVE, "--kubeconfig", "/nonexistent"), 2, ("--kubeconfig: '/nonexistent' is not a file",)
    ),
    "bad-environment": Failure(
        MANIFESTS, 2, ("MCSDNS_TTL: 'soon' is not a whole",), env={"MCSDNS_TTL": "soon"}
    ),
    "lease-times": Failure(
        (*MANIFESTS, "--renew-deadline", "20s"),
        2,
        ("--renew-deadline must be shorter than --lease-duration",),
    ),
    "config-missing": Failure(
        ("serve", "--config", "/nonexistent.yaml"),
        2,
        ("--config /nonexistent.yaml: cannot read it: No such file",),
    ),
    "config-not-yaml": Failure(
        ("serve", "--config", "{tmp}/c.yaml"),
        2,
        ("--config ", "not valid YAML: expected ',' or ']'"),
        files={"c.yaml": "ttl: [1, 2\n"},
    ),
    "config-value-not-readable": Failure(
        ("serve", "--config", "{tmp}/c.yaml"),
        2,
        ("--config ", "a value cannot be read: KeyError"),
        files={"c.yaml": 'ttl: !!bool ""\n'},
    ),
    "config-not-text": Failure(
        ("serve", "--config", "{tmp}/c.yaml"),
        2,
        ("--config ", "not a text file"),
        files={"c.yaml": "\udcff\n"},
    ),
    "config-not-a-mapping": Failure(
        ("serve", "--config", "{tmp}/c.yaml"),
        2,
        ("--config ", "expected a mapping of settings, got list"),
        files={"c.yaml": "- ttl\n"},
    ),
    "config-unknown-key": Failure(
        ("serve", "--config", "{tmp}/c.yaml"),
        2,
        ("--config ", "unknown setting 'tll'"),
        files={"c.yaml": "tll: 5\n"},
    ),
    "config-wrong-type": Failure(
        ("serve", "--config", "{tmp}/c.yaml", "--manifests", str(EXAMPLES)),
        2,
        ("--config ", "key ttl: expects a single value"),
        files={"c.yaml": "ttl: [1, 2]\n"},
    ),
    "aws-region-not-a-name": Failure(
        (*SERVE, "--cloudmap", "true", "--aws-region", "us west"),
        2,
        ("--aws-region: 'us west' is not an AWS region name like us-west-2",),
    ),
    "demo-port": Failure(("demo", "--port", "70000"), 2, ("--port must be 0..65534",)),
    # the settings are valid, what they name cannot be used: exit 1
    "listen-udp-in-use": Failure(
        (*MANIFESTS, "--listen", "127.0.0.1:{udp}"),
        1,
        ("--listen: cannot listen on udp 127.0.0.1:{udp}: Address already in use",),
    ),
    "listen-tcp-in-use": Failure(
        (*MANIFESTS, "--listen", "127.0.0.1:{tcp}"),
        1,
        ("--listen: cannot listen on tcp 127.0.0.1:{tcp}", "in use"),
    ),
    "listen-address-not-here": Failure(
        (*MANIFESTS, "--listen", "192.0.2.1:5353"),
        1,
        ("--listen: cannot listen on udp 192.0.2.1:5353: Cannot assign requested address",),
    ),
    "listen-in-use-with-loops-made": Failure(  # the cluster's loops were made before the port failed
        (*KUBE, "--listen", "127.0.0.1:{udp}"),
        1,
        ("--listen: cannot listen on udp 127.0.0.1:{udp}: Address already in use",),
        files={"kubeconfig": kubeconfig()},
    ),
    "http-in-use": Failure(
        (*MANIFESTS, "--http", "127.0.0.1:{tcp}"),
        1,
        ("--http: cannot listen on tcp 127.0.0.1:{tcp}: Address already in use",),
    ),
    "http-address-not-here": Failure(
        (*MANIFESTS, "--http", "192.0.2.1:9153"),
        1,
        ("--http: cannot listen on tcp 192.0.2.1:9153: Cannot assign requested address",),
    ),
    "kubeconfig-not-yaml": Failure(
        KUBE,
        1,
        (
            "--kubeconfig: ",
            "kubeconfig: not valid YAML: expected the node content, but found '-' at line 3, column 3",
        ),
        files={"kubeconfig": "apiVersion: v1\nclusters: [\n  - {name: a\n"},
    ),
    "kubeconfig-a-list": Failure(
        KUBE, 1, ("--kubeconfig: ", "not a kubeconfig (a YAML list"), files={"kubeconfig": "- a\n- b\n"}
    ),
    "kubeconfig-empty": Failure(
        KUBE, 1, ("--kubeconfig: ", "not a kubeconfig (it is empty"), files={"kubeconfig": ""}
    ),
    "kubeconfig-clusters-not-a-list": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "clusters must be a list of entries with a name and a cluster mapping"),
        files={"kubeconfig": "apiVersion: v1\nclusters: 5\n"},
    ),
    "kubeconfig-no-current-context": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "no current-context (its contexts: x)"),
        files={"kubeconfig": kubeconfig(current="")},
    ),
    "kubeconfig-unknown-context": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "current-context 'prod' is not one of its contexts (x)"),
        files={"kubeconfig": kubeconfig(current="current-context: prod")},
    ),
    "kubeconfig-no-server": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "cluster 'c' has no server"),
        files={"kubeconfig": kubeconfig().replace('server: "https://127.0.0.1:1"', "")},
    ),
    "kubeconfig-client-certificate-missing": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "{tmp}/missing.crt"),
        files={
            "kubeconfig": kubeconfig(
                user="client-certificate: {tmp}/missing.crt, client-key: {tmp}/missing.key"
            )
        },
    ),
    "kubeconfig-client-certificate-not-pem": Failure(
        KUBE,
        1,
        (
            "--kubeconfig: ",
            "client-certificate {tmp}/c.crt, client-key {tmp}/c.key: not a PEM certificate and its key",
        ),
        files={
            "kubeconfig": kubeconfig(user="client-certificate: {tmp}/c.crt, client-key: {tmp}/c.key"),
            "c.crt": NOT_PEM,
            "c.key": NOT_PEM,
        },
    ),
    "kubeconfig-ca-missing": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "{tmp}/ca.crt"),
        files={"kubeconfig": kubeconfig(cluster=", certificate-authority: {tmp}/ca.crt")},
    ),
    "kubeconfig-ca-not-pem": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "certificate-authority {tmp}/ca.crt: not a PEM CA certificate"),
        files={"kubeconfig": kubeconfig(cluster=", certificate-authority: {tmp}/ca.crt"), "ca.crt": NOT_PEM},
    ),
    "kubeconfig-ca-data-not-pem": Failure(
        KUBE,
        1,
        ("--kubeconfig: ", "certificate-authority-data: not a PEM CA certificate"),
        files={"kubeconfig": kubeconfig(cluster=", certificate-authority-data: dGhpcyBpcyBub3QgUEVNCg==")},
    ),
    "in-cluster-outside-a-pod": Failure(
        (*SERVE, "--kubeconfig", "in-cluster"), 1, ("--kubeconfig: in-cluster: Service host/port is not set",)
    ),
    "cloudmap-no-region": Failure(
        (*SERVE, "--cloudmap", "true"), 1, ("--cloudmap: no AWS region (give --aws-region",), env=NO_AWS
    ),
    "cloudmap-empty-region": Failure(
        ("status",),
        1,
        ("Cloud Map not read: --cloudmap: no AWS region (give --aws-region",),
        env={
            **NO_AWS,
            "AWS_REGION": "",
            "AWS_DEFAULT_REGION": "",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
        },
    ),
    "cloudmap-no-credentials": Failure(
        CLOUDMAP,
        1,
        (
            "--cloudmap: no AWS credentials found "
            "(set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a web identity token)",
        ),
        env=NO_AWS,
    ),
    "cloudmap-unknown-profile": Failure(
        CLOUDMAP,
        1,
        ("--cloudmap: ", "The config profile (nope) could not be found"),
        env={**NO_AWS, "AWS_PROFILE": "nope"},
    ),
    "demo-port-in-use": Failure(
        ("demo", "--port", "{udp}", "--once"),
        1,
        (
            "--port {udp}: cannot listen on udp 127.0.0.1:{udp}: Address already in use",
            "--port 0 picks free ports",
        ),
    ),
}


@contextmanager
def taken_ports() -> Iterator[dict[str, str]]:
    """A port whose UDP socket is taken and one whose TCP socket is taken (listening), on loopback."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        yield {"udp": str(udp.getsockname()[1]), "tcp": str(tcp.getsockname()[1])}


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"{{{key}}}", value)
    return text


def run_failure(
    failure: Failure, tmp_path: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``failure`` in a clean environment (no MCSDNS_, AWS_ or in-cluster variables of the caller's);
    the result and the expected line's parts joined by newlines, placeholders filled in."""
    with taken_ports() as ports:
        values = {"tmp": str(tmp_path), **ports}
        for name, content in failure.files.items():
            (tmp_path / name).write_bytes(fill(content, values).encode("utf-8", "surrogateescape"))
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MCSDNS_", "AWS_", "KUBERNETES_SERVICE_"))
        }
        result = subprocess.run(
            [*MCSDNS, *(fill(arg, values) for arg in failure.args), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**clean, "TMPDIR": str(tmp_path), **failure.env},
            cwd=ROOT,
        )
    return result, "\n".join(fill(part, values) for part in failure.says)


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_a_start_up_failure_is_one_line(failure: Failure, tmp_path: Path) -> None:
    """Every way to fail before serving ends in one `mcsdns: error:` line naming the setting and the cause,
    exit 2 for a bad setting and 1 for what a valid one names (a port, a kubeconfig, credentials), and
    nothing else that is not a log line: no traceback, no warnings of coroutines never awaited."""
    result, says = run_failure(failure, tmp_path)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("mcsdns: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for part in says.splitlines():
        assert part in errors[0], result.stderr
    assert errors[0].index(says.splitlines()[0]) == len("mcsdns: error: "), "the setting comes first"
    assert result.returncode == failure.status, result.stderr
    logged = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO) ")
    assert all(logged.match(line) for line in lines[:-1]), result.stderr
    assert "Traceback" not in result.stderr and "never awaited" not in result.stderr
    assert not list(tmp_path.glob("mcsdns-*")), "temporary files left behind"


@pytest.mark.parametrize("case", ["http-in-use", "kubeconfig-not-yaml", "cloudmap-no-credentials"])
def test_debug_logs_the_traceback_of_a_start_up_failure(case: str, tmp_path: Path) -> None:
    result, says = run_failure(FAILURES[case], tmp_path, "--log-level", "debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mcsdns: error: " + says.splitlines()[0])


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
