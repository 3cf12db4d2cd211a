"""``h2pool get``: one request through ``h2pool.Pool``; the body to stdout."""

from __future__ import annotations

import argparse
import time
from typing import Any, BinaryIO, TextIO

from .._pool.pool import Pool
from .arguments import parse_header, parse_json, split_url
from .failures import CommandError, Exit
from .output import fields, note


def read_data(data: str, stdin: BinaryIO) -> bytes:
    """The body ``-d`` gives: the text, or ``@FILE``'s bytes, or stdin's for ``@-``.

    Raises:
        CommandError: The file cannot be read.
    """
    if not data.startswith("@"):
        return data.encode()
    name = data[1:]
    if name == "-":
        return stdin.read()
    try:
        with open(name, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CommandError(f"cannot read {name!r}: {exc.strerror}") from None


def make_pool(args: argparse.Namespace, base: str) -> Pool:
    """The pool one command uses: fails fast, bounded by ``--timeout``."""
    try:
        return Pool(
            base,
            endpoints=args.endpoints,
            ssl=False if args.insecure else None,
            timeout=args.timeout,
            connect_timeout=min(args.timeout, 5.0),
            min_connections=1,
        )
    except ValueError as exc:
        raise CommandError(str(exc), Exit.BAD_URL) from None


async def get(args: argparse.Namespace, stdout: BinaryIO, stderr: TextIO, stdin: BinaryIO) -> Exit:
    """Send the request ``args`` describe; write the body to ``stdout``.

    Raises:
        CommandError: A bad argument.
        H2PoolError: The request failed.
    """
    target = split_url(args.url)
    headers = [parse_header(text) for text in args.headers]
    if args.trailers:
        headers.append(("te", "trailers"))
    body: dict[str, Any] = {}
    if args.data is not None:
        body["content"] = read_data(args.data, stdin)
    elif args.json_body is not None:
        body["json"] = parse_json(args.json_body)
    method = (args.method or ("POST" if body else "GET")).upper()
    verbose = args.verbose
    async with make_pool(args, target.base) as pool:
        started = time.perf_counter()
        response = await pool.request(method, target.path, headers=headers, **body)
        elapsed = time.perf_counter() - started
    if verbose:
        note(f"{method} {args.url}", stderr)
        fields(">", headers, stderr)
        stderr.write(f"< {response.http_version} {response.status_code}\n")
        fields("<", response.headers.items(), stderr)
    stdout.write(response.content)
    stdout.flush()
    if verbose or args.trailers:
        fields("<", response.trailers.items(), stderr)
    if verbose:
        note(f"endpoint {response.endpoint}, {elapsed * 1000:.1f} ms", stderr)
    if args.fail and response.status_code >= 400:
        note(f"HTTP status {response.status_code}", stderr)
        return Exit.HTTP_ERROR
    return Exit.OK
