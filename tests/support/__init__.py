"""Shared test helpers: fakes, recording sinks, deterministic bytes, CLI runner, server helpers.

Test modules import from here (and from ``tests/servers/``), never from one another.
"""
