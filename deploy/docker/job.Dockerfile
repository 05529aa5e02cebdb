# caesar-rest job image for the Kubernetes backend: what a job pod runs,
#   python3 -m caesar_rest.backends.wrapper -- python3 -m caesar_rest.apps.<app>_run ...
# with only the libraries of the chosen apps (no web server, database or broker client).
# Build from the repository root with the wheels in ./wheelhouse (see Dockerfile), one image
# per app or one for several (`make images` builds the sep one as caesar-rest-job:<version>,
# the image deploy/kubernetes/configmap.yaml names):
#   docker build -f deploy/docker/job.Dockerfile --build-arg APP_PACKAGES="sep" \
#       -t caesar-rest-job:0.1.0 .
#   docker build -f deploy/docker/job.Dockerfile \
#       --build-arg APP_PACKAGES="sep photutils scikit-image AegeanTools bdsf" \
#       -t caesar-rest-job-all:0.1.0 .
# then CAESAR_REST_KUBE_IMAGE (default image) or CAESAR_REST_KUBE_IMAGES ({app: image}).
# Versions come from requirements.lock (as a constraint: nothing else is installed).
# BASE_IMAGE as in Dockerfile (both stages: the environment uses the base's Python). The
# original C++ CAESAR (caesar-cpp app) is not built here: use a BASE_IMAGE that has it.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The same base stage as Dockerfile (the builder reuses its layer).
FROM ${BASE_IMAGE} AS base
RUN need=""; \
    python3 -c "import ensurepip, venv" 2>/dev/null || need="python3 python3-venv"; \
    command -v tini >/dev/null || need="$need tini"; \
    if [ -n "$need" ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi \
    && groupadd --gid 1000 caesar \
    && useradd --uid 1000 --gid 1000 --home-dir /srv/caesar-rest --no-create-home \
        --shell /usr/sbin/nologin caesar

# The libraries first (cached while only the code changes; scripts/docker.sh tags this stage
# <image>-deps), then the package into /opt/caesar-rest/app, found through a .pth file.
FROM base AS deps
ARG APP_PACKAGES="sep"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheelhouse PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/caesar-rest/venv
ENV PATH=/opt/caesar-rest/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
COPY wheelhouse /wheelhouse
# What the job runner and the catalogue writers import, plus the apps' own libraries.
RUN pip install --only-binary=:all: -c requirements.lock numpy scipy astropy matplotlib ${APP_PACKAGES} \
    && echo /opt/caesar-rest/app > "$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/caesar-rest-app.pth" \
    && find /opt/caesar-rest/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM deps AS build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps --target /opt/caesar-rest/app . \
    && find /opt/caesar-rest/app -name '__pycache__' -prune -exec rm -rf {} +

FROM base AS runtime
COPY --from=deps /opt/caesar-rest/venv /opt/caesar-rest/venv
COPY --from=build /opt/caesar-rest/app /opt/caesar-rest/app
# The pod runs with a read-only root file system and /tmp in memory (see the backend).
ENV PATH=/opt/caesar-rest/app/bin:/opt/caesar-rest/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
USER 1000:1000
WORKDIR /tmp
# A job image has no server to probe: healthy when the wrapper and the libraries import.
HEALTHCHECK --interval=60s --timeout=20s --retries=1 \
    CMD ["python3", "-c", "import caesar_rest.backends.wrapper, numpy, astropy"]
CMD ["python3", "-m", "caesar_rest.backends.wrapper", "--help"]
