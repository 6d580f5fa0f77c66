# syntax=docker/dockerfile:1
# HTTP router: Flask under gunicorn, numpy classifier heads, the embedder's gRPC client.
# No TensorFlow: only env/router.txt (which includes env/base.txt) is installed.
#
#   docker build -f env/docker/router.Dockerfile -t manyheads-router .
#
# Build context: the repository root, narrowed by router.Dockerfile.dockerignore (BuildKit).

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
COPY env/base.txt env/router.txt /tmp/env/
RUN pip install --no-cache-dir -r /tmp/env/router.txt

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    API_HOST=0.0.0.0 \
    API_PORT=8000 \
    API_SPOOL_DIR=/app/var/spool \
    MODEL_STORE=/srv/models
# /srv/models is mounted read-only in production. /app/var/spool is the only place the router
# writes that must outlive the container (the journal of prediction rows, rows waiting for
# PostgreSQL, the API-key snapshot): mount a volume there. Owned by the router's user, so a new
# named volume mounted on it starts with that owner.
RUN groupadd --system --gid 10001 manyheads \
    && useradd --system --uid 10001 --gid manyheads --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin manyheads \
    && mkdir -p /srv/models /app/var/spool \
    && chown -R manyheads:manyheads /app/var
COPY --from=venv /opt/venv /opt/venv
WORKDIR /app
# The whole embedder package is small; the router imports only its client, normalize,
# errors and proto modules, and TensorFlow is not installed here.
COPY embedder/ embedder/
COPY heads/ heads/
COPY inferencedb/ inferencedb/
COPY api/ api/
COPY --from=stubs /src/embedder/proto/ embedder/proto/
USER 10001:10001
EXPOSE 8000
# Liveness only: /readyz (embedder reachable, heads loaded) is for the load balancer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('API_PORT', '8000'), timeout=4)"]
CMD ["gunicorn", "-c", "api/web/gunicorn_conf.py", "api.web.app:create_app()"]
