"""The Dockerfile the chart's image is built from, read statically (no Docker engine here): a wheel built in
one stage and installed into a virtualenv in the next, a non-root user, and a build context of exactly what
the wheel needs."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess

from mcsdns.settings import resolve
from tests.chart.helpers import ROOT, render

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def test_the_image_is_python_3_11_slim_built_in_two_stages() -> None:
    steps = instructions()
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in steps
    assert [rest for word, rest in steps if word == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    build = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ." in build
    assert (
        "python -m venv /opt/mcsdns" in build
        and "/opt/mcsdns/bin/pip install --no-deps /wheels/*.whl" in build
    )


def test_every_package_of_the_image_comes_from_the_lock() -> None:
    runs = [rest for word, rest in instructions() if word == "RUN"]
    installs = [cmd.strip() for run in runs for cmd in run.split("&&") if " install " in cmd]
    assert installs, "the Dockerfile installs nothing?"
    for cmd in installs:
        # Either the lock with its hashes, or the one wheel built here with no dependencies of its own.
        assert ("--require-hashes -r " in cmd and cmd.endswith("requirements/runtime.txt")) or (
            "--no-deps /wheels/*.whl" in cmd
        ), cmd
    wheel = next(cmd for run in runs for cmd in run.split("&&") if " wheel " in cmd)
    assert "--no-build-isolation" in wheel, "the build backend must be the locked one, not a fresh download"


def test_the_final_stage_runs_mcsdns_serve_as_user_65532() -> None:
    stage = dict(final_stage())
    assert stage["USER"] == "${UID}:${UID}" and ("ARG", "UID=65532") in final_stage()
    assert json.loads(stage["ENTRYPOINT"]) == ["mcsdns"]
    assert json.loads(stage["CMD"]) == ["serve"]
    assert stage["EXPOSE"].split() == ["5353/udp", "5353/tcp", "9153/tcp"]


def test_the_images_defaults_listen_where_it_exposes_and_the_chart_probes() -> None:
    env_line = dict(final_stage())["ENV"]
    env = dict(re.findall(r"(\w+)=(\S+)", env_line))
    settings = resolve(
        {}, environ={**env, "MCSDNS_MANIFESTS": str(ROOT / "examples" / "clusterset")}, config={}
    )
    assert [str(a) for a in settings.server.listen] == ["0.0.0.0:5353"]
    assert str(settings.http) == "0.0.0.0:9153"
    ports = {p["containerPort"] for p in render().container["ports"]}
    assert ports == {5353, 9153}


def _ignore_patterns() -> list[tuple[bool, str]]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [
        (line.startswith("!"), line.lstrip("!").rstrip("/"))
        for line in (raw.strip() for raw in lines)
        if line and not line.startswith("#")
    ]


def _excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; one that matches a directory matches its files."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = r"(?:.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_the_build_context_is_exactly_what_the_wheel_is_built_from() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    patterns = _ignore_patterns()
    sent = {path for path in tracked if not _excluded(path, patterns)}
    wanted = ("pyproject.toml", "README.md", "requirements/runtime.txt")
    assert sent == {p for p in tracked if p in wanted or p.startswith("mcsdns/")}
    assert not _excluded("mcsdns/clients/kube.py", patterns)
    assert _excluded("mcsdns/__pycache__/app.cpython-311.pyc", patterns)
    copied = [source for word, rest in instructions() if word == "COPY" for source in rest.split()[:-1]]
    assert copied == ["requirements/runtime.txt", "pyproject.toml", "README.md", "mcsdns"]
