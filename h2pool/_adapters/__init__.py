"""Adapters that put the pool behind the interfaces people already use: httpx and httpcore."""
