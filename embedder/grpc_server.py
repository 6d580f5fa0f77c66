"""The gRPC adapter: wire types to plain Python and back, around EmbeddingService.

Also serves grpc.health.v1 and server reflection, so standard tools (grpcurl, grpc_health_probe,
load-balancer health checks) can talk to the service.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedder.errors import EmbedderError
from embedder.grpc_codes import code_for, details_for
from embedder.proto import embedder_pb2 as pb
from embedder.service import EmbeddingService

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Embedder"].full_name
MAX_MESSAGE_BYTES = 128 * 1024 * 1024


class _Undecodable:
    """Stands in for a request that protobuf could not parse (e.g. a text that is not UTF-8)."""

    def __init__(self, reason: str):
        self.reason = reason


def _lenient(message_cls):
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return parse


def model_info_message(service: EmbeddingService) -> pb.ModelInfo:
    info = service.info
    return pb.ModelInfo(
        name=info.name,
        version=info.version,
        dim=info.dim,
        model_id=info.model_id,
        lowercase=info.lowercase,
        max_seq_length=info.max_seq_length,
        max_texts=service.limits.max_texts,
        max_text_chars=service.limits.max_text_chars,
        layers=info.layers,
    )


class EmbedderServicer:
    def __init__(self, service: EmbeddingService):
        self._service = service
        self._info = model_info_message(service)

    def Embed(self, request, context: grpc.ServicerContext) -> pb.EmbedResponse:
        if isinstance(request, _Undecodable):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request could not be decoded ({request.reason}); every text must be valid UTF-8",
            )
        try:
            result = self._service.embed(
                list(request.texts),
                timeout=context.time_remaining(),
                scope=request.cache_scope,
                features=request.features,
            )
        except EmbedderError as exc:
            context.abort(code_for(exc), details_for(exc))
        return pb.EmbedResponse(
            model=self._info,
            count=len(result.cache_hits),
            embeddings=result.vectors.astype("<f4", copy=False).tobytes(),
            cache_hits=result.cache_hits,
            features=result.features,
            dim=result.vectors.shape[1],
        )

    def Info(self, request, context: grpc.ServicerContext) -> pb.ModelInfo:
        return self._info


def _handlers(servicer: EmbedderServicer) -> grpc.GenericRpcHandler:
    methods = {
        "Embed": grpc.unary_unary_rpc_method_handler(
            servicer.Embed,
            request_deserializer=_lenient(pb.EmbedRequest),
            response_serializer=pb.EmbedResponse.SerializeToString,
        ),
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info,
            request_deserializer=_lenient(pb.InfoRequest),
            response_serializer=pb.ModelInfo.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, and let in-flight ones finish within grace_s."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def start_server(service: EmbeddingService, address: str, *, threads: int = 32) -> RunningServer:
    """Start serving on `address` (port 0 picks a free port, reported in RunningServer.port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="embed-rpc"),
        maximum_concurrent_rpcs=threads * 8,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    server.add_generic_rpc_handlers((_handlers(EmbedderServicer(service)),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("embedder serving %s on %s", service.info.model_id, address.rsplit(":", 1)[0] + f":{port}")
    return RunningServer(server, health_servicer, port)
