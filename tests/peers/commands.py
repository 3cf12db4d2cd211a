"""Command-line clients run by the tests: any command, curl, h2load."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import shlex
from collections.abc import Sequence

from .process import _STOP_TIMEOUT, _guarded, _tail, require_executable


async def _drain(stream: asyncio.StreamReader | None, sink: bytearray) -> None:
    """Append everything from ``stream`` to ``sink`` until EOF.

    Reading into a caller-owned buffer keeps what arrived so far if the read is cancelled.
    """
    if stream is None:
        return
    while chunk := await stream.read(65536):
        sink += chunk


async def run_command(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run a command without blocking the event loop, killing it if it overruns.

    Args:
        argv: The command line, e.g. ``["nghttp", "-nv", url]``.
        timeout: Seconds the command may take.

    Returns:
        ``(returncode, stdout, stderr)``.

    Raises:
        TimeoutError: The command did not finish in time; it has been killed and reaped.
    """
    process = await asyncio.create_subprocess_exec(
        *_guarded(argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = bytearray(), bytearray()

    async def finish() -> int:
        await asyncio.gather(_drain(process.stdout, stdout), _drain(process.stderr, stderr))
        return await process.wait()

    try:
        async with asyncio.timeout(timeout):
            returncode = await finish()
    except BaseException as exc:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        # Reap it and read the pipes to EOF, so no zombie or unclosed transport outlives us.
        async with asyncio.timeout(_STOP_TIMEOUT):
            await finish()
        if isinstance(exc, TimeoutError):
            output = _tail(stderr.decode(errors="replace")) or "(empty)"
            raise TimeoutError(
                f"{shlex.join(argv)} did not finish within {timeout:g} s and was killed; "
                f"stderr:\n{output}"
            ) from None
        raise
    return returncode, bytes(stdout), bytes(stderr)


async def run_curl(args: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run curl with ``args`` without blocking the event loop.

    Args:
        args: Arguments after ``curl``, e.g. ``["-sS", "--http2-prior-knowledge", url]``.
        timeout: Seconds before curl is killed.

    Returns:
        ``(returncode, stdout, stderr)``.

    Raises:
        TimeoutError: curl did not finish in time (it has been killed).
    """
    return await run_command([require_executable("curl"), *args], timeout)


@dataclasses.dataclass(frozen=True)
class H2loadResult:
    """The outcome of an h2load run.

    h2load exits with status 0 even when every request failed, so check ``failed``, not
    ``returncode``. A request "fails" on any non-2xx/3xx status (so a 404 counts), "errors" on a
    connection or protocol error (an errored request is also counted as failed), and ``timeout``
    counts requests cut short by h2load's own ``-T``/``-N`` timeouts.

    Attributes:
        total: Requests asked for (``-n``).
        started: Requests sent.
        done: Requests finished, successfully or not.
        succeeded: Requests with a 2xx or 3xx response.
        failed: Requests that did not succeed.
        errored: Requests lost to connection or protocol errors.
        timeout: Requests lost to h2load's timeouts.
        status_2xx: Responses with a 2xx status.
        status_3xx: Responses with a 3xx status.
        status_4xx: Responses with a 4xx status.
        status_5xx: Responses with a 5xx status.
        returncode: h2load's exit status.
        output: h2load's stdout, verbatim.
        stderr: h2load's stderr, verbatim.
    """

    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    returncode: int
    output: str
    stderr: str

    _REQUESTS = re.compile(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout$",
        re.MULTILINE,
    )
    _STATUS = re.compile(
        r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx$", re.MULTILINE
    )

    @classmethod
    def parse(cls, returncode: int, output: str, stderr: str = "") -> H2loadResult:
        """Parse h2load's summary.

        Args:
            returncode: h2load's exit status.
            output: h2load's stdout, which holds the ``requests:`` and ``status codes:`` lines.
            stderr: h2load's stderr, kept for error messages.

        Returns:
            The parsed result.

        Raises:
            ValueError: The summary lines are missing (e.g. h2load rejected its arguments).
        """
        requests = cls._REQUESTS.search(output)
        status = cls._STATUS.search(output)
        if requests is None or status is None:
            raise ValueError(
                f"no h2load summary in its output (exit status {returncode}); "
                f"stdout:\n{_tail(output)}\nstderr:\n{_tail(stderr)}"
            )
        total, started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
        s2xx, s3xx, s4xx, s5xx = map(int, status.groups())
        return cls(
            total=total,
            started=started,
            done=done,
            succeeded=succeeded,
            failed=failed,
            errored=errored,
            timeout=timeout,
            status_2xx=s2xx,
            status_3xx=s3xx,
            status_4xx=s4xx,
            status_5xx=s5xx,
            returncode=returncode,
            output=output,
            stderr=stderr,
        )


async def run_h2load(
    url: str,
    *,
    requests: int,
    clients: int,
    streams: int,
    timeout: float,
    extra_args: Sequence[str] = (),
) -> H2loadResult:
    """Load a URL with h2load without blocking the event loop.

    h2load speaks h2c with prior knowledge for ``http://`` URLs and negotiates ``h2`` via ALPN
    for ``https://``; it does not verify the server's certificate.

    Args:
        url: The URL to request.
        requests: Total number of requests (``-n``); must be at least ``clients``.
        clients: Number of concurrent connections (``-c``).
        streams: Maximum concurrent streams per connection (``-m``).
        timeout: Seconds before h2load is killed.
        extra_args: More h2load options, e.g. ``["-d", "body.bin"]`` to POST a file.

    Returns:
        The parsed summary.

    Raises:
        TimeoutError: h2load did not finish in time (it has been killed).
        ValueError: h2load printed no summary.
    """
    argv = [
        require_executable("h2load"),
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-m",
        str(streams),
        *extra_args,
        url,
    ]
    returncode, stdout, stderr = await run_command(argv, timeout)
    return H2loadResult.parse(
        returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )
