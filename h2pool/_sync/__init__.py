"""The blocking API: an event loop in a background thread, and the pool's calls run on it."""
