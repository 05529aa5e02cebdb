# syntax=docker/dockerfile:1.7
# caesar-rest job image for the Kubernetes backend: what a job pod runs,
#   python3 -m caesar_rest.backends.wrapper -- python3 -m caesar_rest.apps.<app>_run ...
# with only the libraries of the chosen apps (no web server, database or broker client).
# Build from the repository root, one image per app or one for several:
#   docker build -f deploy/docker/job.Dockerfile --build-arg APP_PACKAGES="sep" \
#       -t caesar-rest-job-sep:0.1.0 .
#   docker build -f deploy/docker/job.Dockerfile \
#       --build-arg APP_PACKAGES="sep photutils scikit-image AegeanTools bdsf" \
#       -t caesar-rest-job:0.1.0 .
# then CAESAR_REST_KUBE_IMAGE (default image) or CAESAR_REST_KUBE_IMAGES ({app: image}).
# Versions come from requirements.lock (as a constraint: nothing else is installed).
# The original C++ CAESAR (caesar-cpp app) is not built here: use a BASE_IMAGE that has it.
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG APP_PACKAGES="sep"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/caesar-rest/venv
ENV PATH=/opt/caesar-rest/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# What the job runner and the catalogue writers import, plus the apps' own libraries.
RUN pip install -c requirements.lock numpy scipy astropy matplotlib ${APP_PACKAGES}
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . \
    && find /opt/caesar-rest/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --gid 1000 caesar \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin caesar
COPY --from=build /opt/caesar-rest/venv /opt/caesar-rest/venv
# The pod runs with a read-only root file system and /tmp in memory (see the backend).
ENV PATH=/opt/caesar-rest/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
USER 1000:1000
WORKDIR /tmp
CMD ["python3", "-m", "caesar_rest.backends.wrapper", "--help"]
