"""h2pool's own server, run by tests with a coroutine per request."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine

import h2pool

Handler = Callable[[h2pool.H2Protocol, int, h2pool.HeaderList], Coroutine[None, None, None]]


class Server:
    """An h2pool server running ``handler`` as a task per request."""

    def __init__(self, handler: Handler, **kwargs: object) -> None:
        self.handler = handler
        self.kwargs = kwargs
        self.protocols: list[h2pool.H2Protocol] = []
        self.tasks: set[asyncio.Task[None]] = set()
        #: Errors of handlers other than a client going away.
        self.errors: list[BaseException] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, proto: h2pool.H2Protocol) -> None:
        self.protocols.append(proto)
        while True:
            stream_id, headers = await proto.recv_request()
            task = asyncio.create_task(self.handler(proto, stream_id, headers))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """Forget a handler; a stream its client reset or left is no test failure.

        Left unretrieved, that error would be logged when the task is
        collected, with a traceback formatted in the collector: CPython
        3.11's traceback formatting parses source (``ast``), and a parse
        nested in another one (pytest's assertion rewriting) breaks it
        (gh-106905: "AST constructor recursion depth mismatch").
        """
        self.tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, h2pool.H2PoolError):
            self.errors.append(error)  # a handler's own bug, for a test to look at

    async def __aenter__(self) -> Server:
        self.server = await h2pool.start_server(self._serve, "127.0.0.1", 0, **self.kwargs)  # type: ignore[arg-type]
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for proto in self.protocols:
            proto.close_connection()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def echo(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
    """Answer with the request body, and the request headers as trailers."""
    body = await proto.read_stream(stream_id, -1)
    await proto.start_response(stream_id, [(":status", "200"), ("x-echo", "1")])
    await proto.send_data(stream_id, body)
    await proto.send_trailers(stream_id, [(n, v) for n, v in headers if not n.startswith(":")])


def hold(release: asyncio.Event) -> Handler:
    """A handler that answers 200 with no body once ``release`` is set."""

    async def handler(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await release.wait()
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    return handler


async def hello(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
    """Answer 200 with "hello <path>", or with the body of a POST."""
    fields = dict(headers)
    body = await proto.read_stream(stream_id, -1)
    reply = body if fields[":method"] == "POST" else f"hello {fields[':path']}".encode()
    await proto.start_response(stream_id, {":status": "200", "content-length": str(len(reply))})
    await proto.send_data(stream_id, reply, end_stream=True)


@contextlib.asynccontextmanager
async def mute_listener(ssl: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A listener that accepts (with TLS if given) and never says anything."""
    writers: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(mute, "127.0.0.1", 0, ssl=ssl)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()
