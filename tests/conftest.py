"""Shared pytest configuration: loads the peer fixtures from ``tests.peers.fixtures``."""

pytest_plugins = ["tests.peers.fixtures"]
