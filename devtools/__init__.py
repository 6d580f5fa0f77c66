"""Development tools: the embedded PostgreSQL, the local stack of `make run`, process helpers for the
tests and load tests. Never copied into an image."""
