# rotator as a container: a sidecar or a service of its own. Linted and policy-checked by
# tests/test_dockerfile.py (hadolint, then the parsed instructions). Running it: docs/deploy.md.
#
#   docker build -t rotator .
#   docker run --read-only -v ./config.yaml:/etc/rotator/config.yaml:ro \
#     -v ./api-token:/run/secrets/api-token:ro rotator

# -- build: rotator's wheel, installed with its runtime dependencies into a virtual environment ----
FROM python:3.12.8-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY rotator/ rotator/
# the shell completion loaders the package installs as data files (the wheel needs them)
COPY share/ share/

# The environment has no pip of its own; the base image's pip installs into it, at the versions
# pinned in constraints.txt, without the test or sandbox extras. Byte-code is compiled here, so the
# final image runs from a read-only root file system.
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
    && python -m venv --without-pip /opt/rotator \
    && python -m pip --python /opt/rotator/bin/python install --constraint constraints.txt /dist/*.whl

# -- run: the slim base, the environment, nothing else ----------------------------------------------
FROM python:3.12.8-slim-bookworm

LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Scheduled rotation of VPS manual backups through the provider's Backups API" \
      org.opencontainers.image.licenses="MIT"

COPY --from=build /opt/rotator /opt/rotator

# Configuration: a mounted file (ROTATOR_CONFIG), any key overridable by ROTATOR_* variables.
# The token: a mounted secret file, /run/secrets/api-token (read as a credential, like systemd's
# $CREDENTIALS_DIRECTORY/api-token), never a variable baked into the image.
# The health and metrics listener on all interfaces of the container, for probes and scrapes.
ENV PATH="/opt/rotator/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROTATOR_CONFIG=/etc/rotator/config.yaml \
    CREDENTIALS_DIRECTORY=/run/secrets \
    ROTATOR_HTTP__LISTEN=0.0.0.0:9188

# A numeric non-root user (no entry in /etc/passwd needed), so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
EXPOSE 9188

# rotator is PID 1: it handles SIGTERM itself (finishes running deletes within daemon.shutdown_grace,
# then exits 0) and starts no child processes, so there is nothing to reap and no init is needed.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["rotator", "healthcheck"]

ENTRYPOINT ["rotator"]
CMD ["run"]
