# The geomlops image: every step template runs in it on a cluster, and model packages build
# their training and inference images FROM it (see examples/cloud-mask/Dockerfile).
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/geomlops/.venv UV_PYTHON_DOWNLOADS=never \
    PATH=/opt/geomlops/.venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir uv==0.13.8
WORKDIR /opt/geomlops
COPY pyproject.toml uv.lock README.md ./
COPY geomlops geomlops
COPY steps steps
COPY templates templates
COPY pipelines pipelines
COPY postprocessing postprocessing
COPY catalog_sync catalog_sync
COPY examples examples
RUN uv sync --frozen --no-dev --no-editable
# `python` in rendered script templates must be the environment's interpreter
ENTRYPOINT []
CMD ["geomlops", "--help"]

# The builder image: geomlops plus Kaniko's executor, for the registration workflow's
# build-image step (`docker build --target builder`).
FROM gcr.io/kaniko-project/executor:v1.23.2 AS kaniko
FROM runtime AS builder
COPY --from=kaniko /kaniko/executor /kaniko/executor
COPY --from=kaniko /kaniko/ssl /kaniko/ssl
ENV SSL_CERT_DIR=/kaniko/ssl/certs
