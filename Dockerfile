# One image for every stage of the pipeline: `docker run IMAGE produce|process|sink|api ...`.
#
#   docker build -t mbo-pipeline .
#   docker run --rm mbo-pipeline --help
#
# Stages: ui (the web page, built with npm), build (the exact poetry.lock environment in a venv,
# then the project's wheel), runtime (slim Python, the venv and the page, non-root).
# Dependencies come as manylinux x86_64 wheels, so no compiler is needed (linux/amd64).
# Validated without a Docker engine by tests/infra/test_deploy.py (hadolint and the checks there).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG NODE_IMAGE=node:20.19.4-bookworm-slim

# ---- ui: `npm ci && npm run build` in ui/ gives ui/dist ---------------------------------------
FROM ${NODE_IMAGE} AS ui
WORKDIR /ui
COPY ui/ ./
# Without ui/package.json (no page yet) an empty dist keeps the image buildable.
RUN if [ -f package.json ]; then npm ci --no-audit --no-fund && npm run build; \
    else mkdir -p dist; fi

# ---- build: the locked dependencies, then the project ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POETRY_NO_INTERACTION=1 \
    POETRY_VIRTUALENVS_CREATE=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Poetry in a venv of its own; the application venv gets only what poetry.lock says.
RUN python -m venv /opt/poetry \
    && /opt/poetry/bin/pip install --no-cache-dir "poetry==2.5.1" \
    && python -m venv /opt/venv
WORKDIR /src
# Dependencies first (a layer that survives code changes). `poetry install` refuses a lock that
# does not match pyproject.toml, so the image has exactly the locked versions.
COPY pyproject.toml poetry.lock README.md ./
# --compile: the runtime sets PYTHONDONTWRITEBYTECODE, so without bytecode in the image every
# process would compile its imports (numba, Faust, FastAPI, ...) from source at every start.
RUN /opt/poetry/bin/poetry install --only main --no-root --no-directory --compile
COPY mbo_core/ mbo_core/
COPY mbo_cli/ mbo_cli/
COPY producer/ producer/
COPY book_processor/ book_processor/
COPY sink/ sink/
COPY api/ api/
COPY generator/ generator/
RUN /opt/poetry/bin/poetry build --format wheel \
    && pip install --no-cache-dir --no-deps dist/*.whl

# ---- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mbo-pipeline" \
      org.opencontainers.image.description="Databento MBO replay, exact order books, Kafka, ClickHouse, API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mbo \
    && useradd --system --uid 10001 --gid mbo --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin mbo \
    && mkdir -p /app/data /app/ui /tmp/numba-cache \
    && chown -R mbo:mbo /app /tmp/numba-cache
COPY --from=build /opt/venv /opt/venv
COPY --from=ui /ui/dist /app/ui/dist
COPY infra/docker/healthcheck.py /usr/local/bin/mbo-healthcheck
# Containers listen on every interface (probes and Prometheus come from outside); state (only
# used by the dev profile) under /app/data; numba's cache in a directory the user may write; the
# web page the api serves at /.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MBO_DATA_DIR=/app/data \
    MBO_METRICS__HOST=0.0.0.0 \
    MBO_API__HOST=0.0.0.0 \
    MBO_API__UI_DIR=/app/ui/dist
WORKDIR /app
USER 10001:10001
# produce 9101, process 9110 (+ worker index), sink 9102: /metrics; api 8000: /healthz, /metrics.
EXPOSE 8000 9101 9102 9110
# The stage and its port are read from the main process's command line and the MBO_ settings.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/mbo-healthcheck"]
ENTRYPOINT ["mbo"]
CMD ["--help"]
