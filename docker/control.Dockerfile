# latentfarm control plane: the scheduler loop (`latentfarm scheduler`: reaper, re-sending lost messages),
# migrations (`latentfarm db upgrade`), the REST API and dashboard (`latentfarm serve`) and the CLI (submit,
# status, jobs, ...). No TensorFlow: the control
# plane never imports it, so this image stays small. Build context: the repository root.
#
#   docker build -f docker/control.Dockerfile -t latentfarm-control .
#   docker run --init -e LATENTFARM_DATABASE_URL=... -e LATENTFARM_BROKER_URL=... latentfarm-control scheduler
FROM python:3.11-slim

ARG UID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LATENTFARM_ARTIFACTS=/srv/latentfarm/artifacts \
    LATENTFARM_DATA_DIR=/srv/latentfarm/data \
    LATENTFARM_CACHE_DIR=/srv/latentfarm/cache/blobs

WORKDIR /opt/latentfarm/src
COPY pyproject.toml README.md ./
COPY core ./core
COPY scheduler ./scheduler
COPY workers ./workers
COPY storage ./storage

# The project without extras; the check fails the build if TensorFlow came in with it anyway.
RUN set -eux; \
    python3 -m pip install --no-cache-dir .; \
    rm -rf build *.egg-info; \
    python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)"; \
    latentfarm --version

# A non-root user owning the mount points: a named volume mounted there starts with this ownership (the
# read cache of a bucket's blobs, LATENTFARM_CACHE_DIR, is one in docker-compose.yml).
RUN set -eux; \
    useradd --create-home --uid "${UID}" --user-group --shell /bin/sh latentfarm; \
    mkdir -p /srv/latentfarm/artifacts /srv/latentfarm/data /srv/latentfarm/cache /srv/latentfarm/examples; \
    chown -R latentfarm:latentfarm /srv/latentfarm

USER latentfarm
WORKDIR /srv/latentfarm

ENTRYPOINT ["latentfarm"]
CMD ["scheduler"]
