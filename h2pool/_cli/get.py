"""``h2pool get``: one request through ``h2pool.Pool``; the body to stdout."""

from __future__ import annotations

import argparse
import time
from typing import Any, BinaryIO, TextIO

from .arguments import parse_header, parse_json, read_input, split_url
from .failures import Exit
from .output import fields, note
from .pools import command_pool


def read_data(data: str, stdin: BinaryIO) -> bytes:
    """The body ``-d`` gives: the text, or ``@FILE``'s bytes, or stdin's for ``@-``.

    Raises:
        CommandError: The file cannot be read.
    """
    if not data.startswith("@"):
        return data.encode()
    return read_input(data[1:], stdin)


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
    async with command_pool(args, target.base) as pool:
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
