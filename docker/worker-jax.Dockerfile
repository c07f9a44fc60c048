# latentfarm worker on Keras' JAX backend: a GPU machine without TensorFlow. Build context: the repository root.
#
#   GPU (default): docker build -f docker/worker-jax.Dockerfile -t latentfarm-worker:jax .
#                  docker run --init --gpus all -e LATENTFARM_... latentfarm-worker:jax     # a process per GPU
#   CPU:           docker build -f docker/worker-jax.Dockerfile -t latentfarm-worker:jax-cpu --build-arg JAX=jax .
#                  docker run --init -e LATENTFARM_... latentfarm-worker:jax-cpu worker --cpu 2
#
# JAX's CUDA 12 wheels bring their own CUDA and cuDNN libraries (NVIDIA's pip packages), so the base is plain
# Python and the host needs only the NVIDIA driver and container toolkit. LATENTFARM_BACKEND=jax: the worker sets
# KERAS_BACKEND before it imports Keras. The project is installed with its jax extra (JAX and Keras), and the build
# fails if TensorFlow came in with it.
FROM python:3.11-slim

ARG JAX=jax[cuda12]
ARG UID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LATENTFARM_BACKEND=jax \
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
    python3 -m pip install --no-cache-dir ".[jax]" "${JAX}"; \
    rm -rf build *.egg-info; \
    python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)"; \
    python3 -c "import workers.framework as f; f.load(); import keras; assert keras.backend.backend() == 'jax'"; \
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
# One solo-pool worker process per GPU, pinned before JAX is imported (`worker --cpu N` on a CPU build).
CMD ["worker", "--gpus", "all"]
