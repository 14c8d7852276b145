# Container image for cloudflare-ai-gateway-exporter.
#
#   docker build -t cloudflare-ai-gateway-exporter .
#   docker run --rm -p 10123:10123 cloudflare-ai-gateway-exporter --demo
#
# PYTHON_IMAGE may be any Debian-based image with Python >= 3.11, venv and pip
# (python:3.12-slim by default; a locally built Debian image in the test suite).
#
# A release build also says what it is, in the OCI labels (docs/container.md):
#   --build-arg VERSION=$(python3 -c 'import exporter; print(exporter.__version__)')
#   --build-arg REVISION=$(git rev-parse HEAD)
#   --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
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
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
# The version label must not name another version than the code: a VERSION that is not
# exporter.__version__ fails the build before anything is installed (without it the label is empty).
ARG VERSION=""
# pip byte-compiles what it installs: the read-only container never compiles at start.
RUN code_version="$(python3 -c 'import exporter; print(exporter.__version__)')" \
    && if [ -n "$VERSION" ] && [ "$VERSION" != "$code_version" ]; then \
        echo "VERSION=$VERSION but exporter.__version__ is $code_version" >&2; exit 1; fi \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/cloudflare-ai-gateway-exporter --version

# ---- final stage: the virtual environment, the default config, a non-root user ----
FROM ${PYTHON_IMAGE}

RUN groupadd --gid 10001 exporter \
    && useradd --no-log-init --uid 10001 --gid exporter --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin exporter

COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/config.yaml /etc/cloudflare-ai-gateway-exporter/config.yaml
# The licence the labels name, where scanners look for it (the wheel's dist-info has it too).
COPY LICENSE /licenses/LICENSE

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

# Last, so that a new revision or build date changes no layer above. The source is the
# repository the alert rules' runbook links point at (prometheus/alerts.yml).
ARG VERSION=""
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="cloudflare-ai-gateway-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Cloudflare AI Gateway billing (invoice history)" \
      org.opencontainers.image.source="https://github.com/cloudflare-ai-gateway-exporter/cloudflare-ai-gateway-exporter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
