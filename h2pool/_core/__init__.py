"""The core protocol module: one HTTP/2 connection on asyncio, client and server."""
