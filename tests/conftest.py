"""Shared pytest configuration: loads the third-party peer fixtures from ``tests.peers``."""

pytest_plugins = ["tests.peers"]
