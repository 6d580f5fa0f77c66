"""gunicorn settings for the router: `gunicorn -c api/web/gunicorn_conf.py "api.web.app:create_app()"`.

Workers and threads come from API_WORKERS / API_THREADS (api/web/pool_worker.py: gthread's
request handling with the pool threads waiting on the worker's epoll themselves; each thread waits
on the embedder while others run, and a burst of new connections is spread over the workers).
The app is created in each worker after fork (no preload), so gRPC channels, database connections
and threads are never inherited across a fork.
"""

import os
import shutil
import tempfile

from api.core.settings import router_settings

_settings = router_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
worker_class = "api.web.pool_worker.PoolThreadWorker"
preload_app = False
timeout = 30
graceful_timeout = 30  # SIGTERM: finish requests, then flush each worker's inference log
keepalive = 75  # above the 60 s idle timeout of AWS load balancers, to avoid spurious 502s
# gunicorn lets a peer in forwarded_allow_ips (127.0.0.1 by default: any local client, a sidecar,
# a test) rewrite the WSGI path with SCRIPT_NAME and PATH_INFO request headers; a SCRIPT_NAME the
# path does not start with was a 500 (the contract fuzz test found it). The router is served at
# the root behind load balancers that set neither: no request header reaches the WSGI path.
forwarder_headers = ""
accesslog = os.environ.get("API_ACCESS_LOG") or None
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Prometheus metrics shared by all workers through files in one folder per master process.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="manyheads-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
# gunicorn's control socket, one per master beside its metrics: the default is under $HOME, which
# the image's user does not have, and one path shared by every gunicorn of a user collides.
control_socket = os.path.join(_metrics_dir, "gunicorn.ctl")


def on_starting(server):
    for entry in os.listdir(_metrics_dir):
        os.unlink(os.path.join(_metrics_dir, entry))


def worker_exit(server, worker):
    runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("manyheads")
    if runtime is not None:
        runtime.close()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not os.environ.get("MANYHEADS_KEEP_METRICS_DIR"):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
