"""gRPC stubs generated from protos/embedder.proto by `make stubs` (not committed)."""
