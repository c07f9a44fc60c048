# latentfarm worker: the data plane, with TensorFlow. Build context: the repository root.
#
#   GPU (default): docker build -f docker/worker.Dockerfile -t latentfarm-worker:gpu .
#                  docker run --init --gpus all -e LATENTFARM_... latentfarm-worker:gpu   # a process per GPU
#   CPU:           docker build -f docker/worker.Dockerfile -t latentfarm-worker:cpu \
#                      --build-arg BASE_IMAGE=python:3.11-slim --build-arg EXTRAS=cpu .
#                  docker run --init -e LATENTFARM_... latentfarm-worker:cpu worker --cpu 2
#
# The GPU base image already has TensorFlow with its CUDA libraries: there the project is installed without
# the extra (tensorflow[and-cuda] would pull a second CUDA of several GB) and pinned to the base's
# TensorFlow, Keras and NumPy. On a base without TensorFlow the extra (EXTRAS: cpu or gpu) installs it.
ARG BASE_IMAGE=tensorflow/tensorflow:2.17.0-gpu
FROM ${BASE_IMAGE}

ARG EXTRAS=gpu
ARG UID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LATENTFARM_ARTIFACTS=/srv/latentfarm/artifacts \
    LATENTFARM_DATA_DIR=/srv/latentfarm/data \
    LATENTFARM_CACHE_DIR=/srv/latentfarm/cache/blobs

WORKDIR /opt/latentfarm/src
COPY pyproject.toml README.md ./
COPY core ./core
COPY scheduler ./scheduler
COPY workers ./workers
COPY storage ./storage

RUN set -eux; \
    python3 -m pip freeze \
        | grep -iE '^(tensorflow|tensorflow[-_]cpu|tf[-_]keras|keras|numpy|ml[-_]dtypes|h5py|protobuf)==' \
        > /tmp/base-constraints.txt || true; \
    if grep -qiE '^tensorflow([-_]cpu)?==' /tmp/base-constraints.txt; then target=.; else target=".[${EXTRAS}]"; fi; \
    python3 -m pip install --no-cache-dir -c /tmp/base-constraints.txt "$target"; \
    rm -rf /tmp/base-constraints.txt build *.egg-info; \
    python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is None)"; \
    latentfarm --version

# A non-root user owning the mount points: a named volume mounted there starts with this ownership (the
# read cache of a bucket's blobs, LATENTFARM_CACHE_DIR, is one in docker-compose.yml).
RUN set -eux; \
    useradd --create-home --uid "${UID}" --user-group --shell /bin/sh latentfarm; \
    mkdir -p /srv/latentfarm/artifacts /srv/latentfarm/data /srv/latentfarm/cache; \
    chown -R latentfarm:latentfarm /srv/latentfarm

USER latentfarm
WORKDIR /srv/latentfarm

ENTRYPOINT ["latentfarm"]
# One solo-pool worker process per GPU, pinned before TensorFlow is imported (`worker --cpu N` on a CPU build).
CMD ["worker", "--gpus", "all"]
