"""SyncPool: the blocking pool, from many threads, against h2pool's own server in its own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import h2pool
from h2pool._pool.verbs import DEFAULT
from h2pool._sync.body import Held
from h2pool._sync.pool import forwarded
from tests.servers import echo, hello
from tests.threaded_server import ThreadedServer, wait_until

THREADS = 16


def pool_threads() -> list[threading.Thread]:
    """The threads of SyncPools (and of their loops' executors) alive now."""
    return [t for t in threading.enumerate() if t.name.startswith(("h2pool", "asyncio"))]


@pytest.fixture
def hello_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(hello) as server:
        yield server


@pytest.fixture
def echo_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo) as server:
        yield server


class Rendezvous:
    """A handler that answers once ``count`` requests are in at the same time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.all_in = asyncio.Event()

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        self.arrived += 1
        if self.arrived == self.count:
            self.all_in.set()
        await self.all_in.wait()
        await hello(proto, stream_id, headers)


class Parked:
    """A handler that says a request arrived, then answers only when released."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = asyncio.Event()

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList
    ) -> None:
        self.arrived.set()
        await self.release.wait()
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)


def test_sixteen_threads_share_one_connection() -> None:
    # Every thread's request is in flight at once (the server answers only when
    # all 16 are in), all multiplexed on the pool's one connection.
    rendezvous = Rendezvous(THREADS)
    start = threading.Barrier(THREADS)
    with (
        ThreadedServer(rendezvous) as server,
        h2pool.SyncPool(server.url(), max_connections=1, timeout=20) as pool,
    ):

        def work(index: int) -> list[tuple[int, bytes]]:
            start.wait(timeout=10)
            first = pool.get(f"/thread/{index}")
            rest = [pool.post("/", content=f"{index}-{n}") for n in range(20)]
            return [(r.status_code, r.content) for r in (first, *rest)]

        with concurrent.futures.ThreadPoolExecutor(THREADS) as threads:
            results = list(threads.map(work, range(THREADS)))
        for index, responses in enumerate(results):
            expected = [(200, f"hello /thread/{index}".encode())]
            expected += [(200, f"{index}-{n}".encode()) for n in range(20)]
            assert responses == expected
        (endpoint,) = pool.stats().endpoints
        assert endpoint.connections == 1
        assert len(server.server.protocols) == 1
        assert rendezvous.arrived == THREADS * 21


def test_with_block_closes_and_leaves_no_thread(hello_server: ThreadedServer) -> None:
    before = pool_threads()
    with h2pool.SyncPool(hello_server.url()) as pool:
        assert pool.get("/a").content == b"hello /a"
        assert len(pool_threads()) > len(before)
        assert pool.stats().closed is False
    assert pool_threads() == before
    with pytest.raises(h2pool.PoolClosed):
        pool.get("/a")
    with pytest.raises(h2pool.PoolClosed), pool.stream("GET", "/a"):
        pass  # pragma: no cover - never entered
    with pytest.raises(h2pool.PoolClosed):
        pool.stats()
    pool.close()  # idempotent
    assert pool_threads() == before


def test_a_pool_never_used_starts_no_thread() -> None:
    before = pool_threads()
    pool = h2pool.SyncPool("http://127.0.0.1:9")
    assert pool_threads() == before
    pool.close()
    with pytest.raises(h2pool.PoolClosed):
        pool.get("/")
    assert pool_threads() == before


def test_bad_arguments_raise_in_the_calling_thread() -> None:
    before = pool_threads()
    with pytest.raises(ValueError, match="target"):
        h2pool.SyncPool("ftp://example.com")
    with pytest.raises(ValueError, match="min_connections"):
        h2pool.SyncPool("http://127.0.0.1:9", min_connections=5, max_connections=1)
    assert pool_threads() == before


def test_close_from_another_thread_ends_requests_in_flight() -> None:
    held = Parked()
    before = pool_threads()
    with ThreadedServer(held) as server:
        pool = h2pool.SyncPool(server.url(), timeout=20)
        with concurrent.futures.ThreadPoolExecutor(1) as threads:
            waiting = threads.submit(pool.get, "/held")
            assert held.arrived.wait(timeout=10)
            closer = threading.Thread(target=pool.close, kwargs={"timeout": 0.2})
            closer.start()
            closer.join(timeout=10)
            assert not closer.is_alive()
            with pytest.raises(h2pool.H2PoolError):
                waiting.result(timeout=10)
        with pytest.raises(h2pool.PoolClosed):
            pool.get("/again")
    assert pool_threads() == before


def test_close_lets_requests_in_flight_finish() -> None:
    held = Parked()
    with ThreadedServer(held) as server:
        pool = h2pool.SyncPool(server.url(), timeout=20)
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            waiting = threads.submit(pool.get, "/held")
            assert held.arrived.wait(timeout=10)
            closing = threads.submit(pool.close)
            # New requests are refused as soon as close() began.
            wait_until(lambda: _refused(pool))
            server.call_soon(held.release.set)
            assert waiting.result(timeout=10).status_code == 200
            closing.result(timeout=10)


def _refused(pool: h2pool.SyncPool) -> bool:
    try:
        pool.stats()
    except h2pool.PoolClosed:
        return True
    return False


def test_streaming_reads_the_body_as_it_arrives() -> None:
    release = asyncio.Event()

    async def trickle(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, b"first")
        await release.wait()
        await proto.send_data(stream_id, b"second", end_stream=True)

    with ThreadedServer(trickle) as server, h2pool.SyncPool(server.url(), timeout=20) as pool:
        with pool.stream("GET", "/") as response:
            assert response.status_code == 200
            assert response.endpoint == f"127.0.0.1:{server.port}"
            chunks = response.iter_bytes()
            # The first chunk arrives while the rest does not exist yet.
            assert next(chunks) == b"first"
            server.call_soon(release.set)
            assert b"".join(chunks) == b"second"
        with pool.stream("GET", "/") as response:
            assert response.read() == b"firstsecond"
            assert response.content == b"firstsecond"
            assert isinstance(response.response, h2pool.Response)
        assert pool.stats().active == 0


def test_leaving_a_stream_unread_releases_it(hello_server: ThreadedServer) -> None:
    with h2pool.SyncPool(hello_server.url(), timeout=20) as pool:
        with pool.stream("GET", "/unread") as response:
            assert response.status_code == 200
        assert pool.stats().active == 0
        with pool.stream("GET", "/closed") as response:
            response.close()
            assert pool.stats().active == 0
        with pytest.raises(AttributeError, match=r"use read\(\)"):
            response.aread  # noqa: B018


def test_sync_iterable_upload_runs_in_the_calling_thread(echo_server: ThreadedServer) -> None:
    iterated_in: set[threading.Thread] = set()

    def chunks() -> Iterator[bytes]:
        for n in range(5):
            iterated_in.add(threading.current_thread())
            yield bytes([65 + n]) * 10_000

    with h2pool.SyncPool(echo_server.url(), timeout=20) as pool:
        response = pool.request("POST", "/up", content=chunks())
        assert response.content == b"".join(bytes([65 + n]) * 10_000 for n in range(5))
        assert iterated_in == {threading.current_thread()}
        assert pool.request("PUT", "/list", content=[b"a", b"b"]).content == b"ab"
        with pool.stream("POST", "/up", content=iter([b"x", b"y"])) as streamed:
            assert streamed.read() == b"xy"


def test_a_failing_upload_fails_the_request(echo_server: ThreadedServer) -> None:
    failure = OSError("disk gone")

    def broken() -> Iterator[bytes]:
        yield b"part"
        raise failure

    with h2pool.SyncPool(echo_server.url(), timeout=20) as pool:
        with pytest.raises(OSError, match="disk gone") as caught:
            pool.request("POST", "/up", content=broken())
        assert caught.value is failure
        assert pool.get("/after").status_code == 200


async def _async_error(url: str, path: str, **options: object) -> BaseException:
    async with h2pool.Pool(url, **options) as pool:  # type: ignore[arg-type]
        try:
            await pool.request("GET", path)
        except h2pool.H2PoolError as exc:
            return exc
    raise AssertionError("no error")


def _sync_error(url: str, path: str, **options: object) -> BaseException:
    with h2pool.SyncPool(url, **options) as pool:
        try:
            pool.get(path)
        except h2pool.H2PoolError as exc:
            return exc
    raise AssertionError("no error")


def test_errors_are_the_async_pools_own() -> None:
    async def reset(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)

    held = Parked()
    with ThreadedServer(reset) as resets, ThreadedServer(held) as holds:
        cases: list[tuple[str, dict[str, Any]]] = [
            (resets.url(), {"timeout": 10}),
            (holds.url(), {"timeout": 0.3}),
            (holds.url(), {"timeout": h2pool.Timeouts(total=10, read=0.3)}),
        ]
        for url, options in cases:
            expected = asyncio.run(_async_error(url, "/", **options))
            error = _sync_error(url, "/", **options)
            assert type(error) is type(expected)
            assert getattr(error, "error_code", None) == getattr(expected, "error_code", None)
        assert isinstance(error, h2pool.ReadTimeout)
        holds.call_soon(held.release.set)


def test_refused_from_a_running_event_loop(hello_server: ThreadedServer) -> None:
    pool = h2pool.SyncPool(hello_server.url())

    async def inside() -> None:
        with pytest.raises(RuntimeError, match=r"h2pool\.Pool"):
            pool.get("/")
        with pytest.raises(RuntimeError, match=r"h2pool\.Pool"), pool.stream("GET", "/"):
            pass  # pragma: no cover - never entered

    before = pool_threads()
    asyncio.run(inside())
    assert pool_threads() == before  # refused before starting anything
    assert pool.get("/").content == b"hello /"  # from a plain thread it works
    with pytest.raises(RuntimeError, match=r"h2pool\.Pool"):
        asyncio.run(_close(pool))
    pool.close()


async def _close(pool: h2pool.SyncPool) -> None:
    pool.close()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_keyboard_interrupt_cancels_the_request() -> None:
    held = Parked()
    with ThreadedServer(held) as server, h2pool.SyncPool(server.url(), timeout=20) as pool:
        main = threading.main_thread().ident
        assert main is not None

        def interrupt() -> None:
            assert held.arrived.wait(timeout=10)
            signal.pthread_kill(main, signal.SIGINT)

        interrupter = threading.Thread(target=interrupt)
        interrupter.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                pool.get("/held")
        finally:
            interrupter.join(timeout=10)
        # The request was cancelled on the loop: its stream is reset, nothing in flight.
        wait_until(lambda: pool.stats().active == 0)
        wait_until(lambda: all(p.open_streams == 0 for p in server.server.protocols))
        server.call_soon(held.release.set)
        assert pool.get("/after").status_code == 200


def test_forwarded_keeps_what_was_given() -> None:
    assert forwarded(timeout=DEFAULT, params=None, headers=None, json=None) == {}
    assert forwarded(timeout=None, headers={"a": "b"}) == {"timeout": None, "headers": {"a": "b"}}
    assert forwarded(timeout=3, params={"q": "1"}, json=[1]) == {
        "timeout": 3,
        "params": {"q": "1"},
        "json": [1],
    }


def test_a_forked_child_is_told_to_make_its_own_pool(hello_server: ThreadedServer) -> None:
    with h2pool.SyncPool(hello_server.url(), timeout=10) as pool:
        assert pool.get("/parent").status_code == 200
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process with threads may deadlock: the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit status
            status = 1
            try:
                pool.get("/child")
            except RuntimeError as exc:
                status = 0 if "fork" in str(exc) else 2
            pool.close()  # returns: nothing of the parent's runs here
            os._exit(status)
        statuses: list[int] = []

        def reaped() -> bool:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid:
                statuses.append(os.waitstatus_to_exitcode(status))
            return bool(pid)

        wait_until(reaped, timeout=20)
        assert statuses == [0]
        assert pool.get("/parent-again").status_code == 200  # the parent's pool is intact


class Manager:
    """An async context manager that says when it was entered and exited."""

    def __init__(self) -> None:
        self.entering = asyncio.Event()
        self.may_enter = asyncio.Event()
        self.log: list[str] = []

    async def __aenter__(self) -> str:
        self.entering.set()
        await self.may_enter.wait()
        self.log.append("entered")
        return "value"

    async def __aexit__(self, *exc_info: object) -> None:
        self.log.append("exited")


async def test_held_exits_once_what_was_entered() -> None:
    manager = Manager()
    manager.may_enter.set()
    held = Held(manager)
    assert await held.enter() == "value"
    await held.release()
    await held.release()
    assert manager.log == ["entered", "exited"]


async def test_held_exits_what_was_entered_after_the_caller_left() -> None:
    # The caller stopped waiting (its release() ran) while the manager was
    # being entered, and the entering ended anyway: enter() exits it itself.
    manager = Manager()
    held = Held(manager)
    entering = asyncio.ensure_future(held.enter())
    await manager.entering.wait()
    await held.release()
    assert manager.log == []
    manager.may_enter.set()
    with pytest.raises(asyncio.CancelledError):
        await entering
    assert manager.log == ["entered", "exited"]
