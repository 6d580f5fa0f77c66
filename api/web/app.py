"""The HTTP router: `gunicorn -c api/web/gunicorn_conf.py "api.web.app:create_app()"`.

The app factory wires the runtime (api/core/runtime.py) to four blueprints (predictions,
explanations, models, operations), and owns what every request shares: the request id,
authentication (api/web/auth.py) and the one rendering of errors (api/errors.py).
"""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.core.runtime import Runtime, build_runtime
from api.core.settings import RouterSettings, router_settings
from api.errors import ApiError, BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge, from_database_error
from api.web import auth, routes_explain, routes_models, routes_ops, routes_predict, schemas
from api.web.responses import error_response
from api.web.validation import check_request_id
from inferencedb.errors import InferenceDbError

log = logging.getLogger(__name__)


def create_app(settings: RouterSettings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """The router app. Builds its runtime (heads, embedder client, inference log, keys) unless given."""
    settings = settings or (runtime.settings if runtime else router_settings())
    runtime = runtime or build_runtime(settings)
    app = Flask("api")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # checked before the body is read
    app.extensions["manyheads"] = runtime
    # The predict body's validator is built now, not on the first request: its text pattern comes
    # from a scan of every Unicode code point (most of a second, once per process).
    schemas.predict_request_model(runtime.limits)

    @app.before_request
    def begin() -> None:
        g.started = time.perf_counter()
        g.request_id = uuid.uuid4().hex
        auth.authenticate(runtime)  # first: an unauthenticated caller learns nothing else
        g.request_id = check_request_id(request.headers.get("X-Request-ID")) or g.request_id

    @app.after_request
    def add_request_id(response: Response) -> Response:
        if getattr(g, "request_id", None):
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(InferenceDbError)
    def database_error(error: InferenceDbError) -> Response:
        return error_response(from_database_error(error))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error) -> Response:
        return error_response(
            PayloadTooLarge(f"the request body is larger than the limit of {settings.max_body_bytes} bytes")
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.code == 404:
            return error_response(NotFound(f"no route for {request.method} {request.path}"))
        if error.code == 405:
            allowed = tuple(getattr(error, "valid_methods", None) or ())  # werkzeug's MethodNotAllowed knows them
            return error_response(
                MethodNotAllowed(f"{request.method} is not allowed on {request.path}", allowed=allowed)
            )
        return error_response(BadRequest(error.description or error.name))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception(
            "unexpected error on %s %s (request %s)", request.method, request.path, getattr(g, "request_id", "-")
        )
        return error_response(ApiError("internal error; the request id identifies it in the server log"))

    for blueprint in (routes_predict.routes, routes_explain.routes, routes_models.routes, routes_ops.routes):
        app.register_blueprint(blueprint)
    return app
