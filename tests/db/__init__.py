"""Tests of the router's inference database layer, against a real local PostgreSQL."""
