# syntax=docker/dockerfile:1
# The mcsdns image: `mcsdns serve` as user 65532 on python:3.11-slim, from a wheel built in a first stage.
#
#   docker build -t mcsdns:0.1.0 .          # BuildKit (the default builder since Docker 23)
#   docker run --rm -p 5353:5353/udp -p 5353:5353/tcp \
#     -v "$PWD/examples/clusterset:/zone:ro" mcsdns:0.1.0 serve --manifests /zone
#   dig @127.0.0.1 -p 5353 nginx-hello.demo.svc.clusterset.local
#
# In a cluster the Helm chart (charts/mcsdns) runs it; the image listens on 0.0.0.0:5353 (DNS, UDP and TCP)
# and 0.0.0.0:9153 (/healthz, /readyz, /metrics) unless MCSDNS_LISTEN / MCSDNS_HTTP say otherwise.
# Pin the base by digest (python:3.11-slim@sha256:...) for reproducible builds.

ARG PYTHON_IMAGE=python:3.11-slim

# Every package comes from requirements/runtime.txt, the lock CI tested (hashes checked): the build backend
# for the wheel, and the dependencies of the image. Refresh it with .ci/lock, never here.

# --- build: the mcsdns wheel (no compiler needed: the package is pure Python) -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest of the context out as well).
COPY requirements/runtime.txt ./requirements/
COPY pyproject.toml README.md ./
COPY mcsdns ./mcsdns
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes -r requirements/runtime.txt \
    && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# --- runtime: the wheel and its dependencies in a virtualenv, run as a non-root user ------------------------
FROM ${PYTHON_IMAGE}
ARG UID=65532
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/mcsdns/bin:$PATH \
    MCSDNS_LISTEN=0.0.0.0:5353 \
    MCSDNS_HTTP=0.0.0.0:9153
# The wheel and the lock are mounted from the build stage, not copied: they leave no layer behind. pip compiles the bytecode
# as it installs, so nothing needs writing at run time (the chart mounts the root filesystem read-only); the
# venv's own pip goes afterwards, as nothing installs at run time either.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/requirements,target=/requirements \
    python -m venv /opt/mcsdns \
    && /opt/mcsdns/bin/pip install --require-hashes -r /requirements/runtime.txt \
    && /opt/mcsdns/bin/pip install --no-deps /wheels/*.whl \
    && /opt/mcsdns/bin/pip uninstall -y pip \
    && groupadd --system --gid "${UID}" mcsdns \
    && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mcsdns \
    && mcsdns version
LABEL org.opencontainers.image.title="mcsdns" \
      org.opencontainers.image.description="clusterset.local DNS and MCS controller backed by AWS Cloud Map" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER ${UID}:${UID}
EXPOSE 5353/udp 5353/tcp 9153/tcp
ENTRYPOINT ["mcsdns"]
CMD ["serve"]
