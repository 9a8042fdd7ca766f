# syntax=docker/dockerfile:1
#
# Ticket-photo triage service: two images from one file, both serving the shipped ONNX model with
# `triage serve` (LitServe on onnxruntime-gpu, no torch anywhere).
#
#   docker build --target cpu -t ticket-photo-triage:0.1.0-cpu .
#   docker build --target gpu -t ticket-photo-triage:0.1.0-gpu .
#
# Dependencies: every Python package comes from requirements/serving.lock, installed with --no-deps, plus the
# project's own wheel (also --no-deps); the build then proves the virtual environment holds exactly the lock
# and the project (deploy/serving_lock.py --check --exact) and that it is consistent (pip check). CI installs
# the project against the same file (pip install -c requirements/serving.lock), so image and tests agree.
#
# GPU base: onnxruntime-gpu 1.31.1 is built for CUDA 13.0 and cuDNN 9 (onnxruntime.capi.build_and_package_info
# says cuda_version 13.0; its wheel asks for nvidia-cudnn-cu13~=9.0), so the runtime is NVIDIA's CUDA 13.0
# image with cuDNN 9. Its Python is Ubuntu 24.04's own CPython 3.12, installed with apt: the build fetches nothing
# but the base images, Ubuntu's packages and PyPI's wheels. The lock serves 3.11 and 3.12 alike (the same closure
# under both, a wheel of every pin for both; tests/deploy checks the first, the build's --check --exact both).
# For reproducible releases, pin the two base images by digest (docs/DEPLOY.md, "Pinning base images").

ARG PYTHON_VERSION=3.11.18
ARG PYTHON_IMAGE=python:${PYTHON_VERSION}-slim-trixie
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# The base images are named by the build arguments above so that a release can pin them by digest without editing
# this file (docs/DEPLOY.md); checkov cannot see through an argument and would report every FROM as untagged.
# checkov:skip=CKV_DOCKER_7:Every FROM is a build stage or one of the ARG images above, each tagged with an exact release (tests/deploy checks this); digests are passed as build arguments
# ---------------------------------------------------------------------------------------------------------------
# Build stages: the project wheel, then one virtual environment per target. Nothing here reaches a final image
# except /opt/venv (and, for gpu, the Python of the gpu-python stage, which the final image starts from).
# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
ARG SETUPTOOLS_VERSION=84.2.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}"
COPY pyproject.toml ./
COPY model/ model/
COPY export/ export/
COPY service/ service/
COPY triage_cli/ triage_cli/
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS venv-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/serving.lock requirements/serving.lock
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps --only-binary=:all: \
        -r requirements/serving.lock
COPY --from=wheel /wheels /wheels
RUN python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps --no-index /wheels/*.whl
COPY pyproject.toml ./
COPY deploy/serving_lock.py deploy/serving_lock.py
RUN python -m pip --python /opt/venv/bin/python check \
    && /opt/venv/bin/python deploy/serving_lock.py --check --exact
COPY deploy/trim_venv.sh deploy/trim_venv.sh
RUN sh deploy/trim_venv.sh /opt/venv cpu

# The GPU image's Python: the CUDA image's distribution's own (Ubuntu 24.04: CPython 3.12), from its package
# archive, so that it gets the distribution's security updates; unpinned for the same reason.
FROM ${CUDA_IMAGE} AS gpu-python
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-python AS venv-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# pip itself lives in a throw-away environment of this stage (ensurepip's wheel, shipped with python3-venv).
RUN python3 -m venv /opt/pip \
    && python3 -m venv --without-pip /opt/venv
COPY requirements/serving.lock requirements/serving.lock
RUN /opt/pip/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps --only-binary=:all: \
        -r requirements/serving.lock
COPY --from=wheel /wheels /wheels
RUN /opt/pip/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps --no-index /wheels/*.whl
COPY pyproject.toml ./
COPY deploy/serving_lock.py deploy/serving_lock.py
RUN /opt/pip/bin/python -m pip --python /opt/venv/bin/python check \
    && /opt/venv/bin/python deploy/serving_lock.py --check --exact
COPY deploy/trim_venv.sh deploy/trim_venv.sh
RUN sh deploy/trim_venv.sh /opt/venv gpu

# ---------------------------------------------------------------------------------------------------------------
# Final images: the virtual environment, the shipped model, an unprivileged user; no compilers, no pip installs.
# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="ticket-photo-triage" \
      org.opencontainers.image.description="Routes support photos: screen_damage, general_returns, needs_review (CPU)"
RUN groupadd --system --gid 10001 triage \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin triage
COPY --from=venv-cpu /opt/venv /opt/venv
WORKDIR /app
COPY artifacts/triage.onnx artifacts/model_card.json artifacts/report.html /app/artifacts/
# HOME=/tmp: ONNX Runtime keeps a small cache under $HOME, and /tmp is the one writable path under Kubernetes'
# read-only root file system (the user has no home directory).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/triage-metrics \
    HOME=/tmp
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TRIAGE_PORT', '8000') + '/health', timeout=4)"]
CMD ["triage", "serve"]

FROM gpu-python AS gpu
LABEL org.opencontainers.image.title="ticket-photo-triage" \
      org.opencontainers.image.description="Routes support photos: screen_damage, general_returns, needs_review (CUDA 13, cuDNN 9)"
RUN groupadd --system --gid 10001 triage \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin triage
COPY --from=venv-gpu /opt/venv /opt/venv
WORKDIR /app
COPY artifacts/triage.onnx artifacts/model_card.json artifacts/report.html /app/artifacts/
# HOME=/tmp: ONNX Runtime keeps a small cache under $HOME, and /tmp is the one writable path under Kubernetes'
# read-only root file system (the user has no home directory).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/triage-metrics \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/tmp
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TRIAGE_PORT', '8000') + '/health', timeout=4)"]
CMD ["triage", "serve"]
