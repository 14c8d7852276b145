# Container image for cloudflare-ai-gateway-exporter.
#
#   docker build -t cloudflare-ai-gateway-exporter .
#   docker run --rm -p 10123:10123 cloudflare-ai-gateway-exporter --demo
#
# PYTHON_IMAGE may be any Debian-based image with Python >= 3.11, venv and pip
# (python:3.12-slim by default; a locally built Debian image in the test suite).
ARG PYTHON_IMAGE=python:3.12-slim

# ---- build stage: install the package and its dependencies into /opt/venv ----
FROM ${PYTHON_IMAGE} AS build

# Build machines behind a TLS-intercepting proxy: --build-arg PIP_CERT=/path/to/ca-bundle.crt
# (with the bundle mounted at that path). Used by pip in this stage only.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python3 -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# pip byte-compiles what it installs: the read-only container never compiles at start.
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/cloudflare-ai-gateway-exporter --version

# ---- final stage: the virtual environment, the default config, a non-root user ----
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="cloudflare-ai-gateway-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Cloudflare AI Gateway billing (invoice history)" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 exporter \
    && useradd --no-log-init --uid 10001 --gid exporter --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin exporter

COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/config.yaml /etc/cloudflare-ai-gateway-exporter/config.yaml

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_URL=http://127.0.0.1:10123/-/healthy

WORKDIR /etc/cloudflare-ai-gateway-exporter
USER 10001:10001
EXPOSE 10123

# Override HEALTHCHECK_URL when the exporter listens elsewhere (--web.listen-address).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request as u; u.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

# The exporter is PID 1 (exec form, no shell): it handles SIGTERM and SIGINT itself and
# exits within 2 seconds. Arguments replace CMD, as with Prometheus' own images:
# repeat --config.file when passing other flags.
ENTRYPOINT ["/opt/venv/bin/cloudflare-ai-gateway-exporter"]
CMD ["--config.file=/etc/cloudflare-ai-gateway-exporter/config.yaml"]
