"""The command line: argparse parsers and the pure parsing of option values."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import urlsplit

from .failures import CommandError, Exit

__all__ = [
    "Target",
    "build_parser",
    "parse",
    "parse_header",
    "parse_json",
    "read_input",
    "split_list",
    "split_url",
]


def parse_header(text: str) -> tuple[str, str]:
    """``"name: value"`` (curl's ``-H``) as a (name, value) pair.

    Raises:
        CommandError: No colon, or an empty name.
    """
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() for c in name):
        raise CommandError(f"bad header {text!r}: expected 'name: value'")
    return name, value.strip()


class Target(NamedTuple):
    """A URL split for the pool."""

    base: str
    """``scheme://authority``: the pool's target."""
    path: str
    """The path and query: the request's."""


def split_url(url: str) -> Target:
    """``url`` as the pool's target and the request's path.

    Raises:
        CommandError: Not an ``http(s)://host`` URL (exit code ``BAD_URL``).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise CommandError(f"bad URL {url!r}: {exc}", Exit.BAD_URL) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(
            f"bad URL {url!r}: expected http://host[:port]/path or https://...", Exit.BAD_URL
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(f"{parts.scheme}://{parts.netloc}", path)


def parse_json(text: str) -> Any:
    """The value of ``--json``.

    Raises:
        CommandError: Not JSON.
    """
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"--json is not JSON: {exc}") from None


def read_input(name: str, stdin: BinaryIO) -> bytes:
    """The bytes of the file ``name`` an option gives, or of stdin for ``-``.

    Raises:
        CommandError: The file cannot be read.
    """
    if name == "-":
        return stdin.read()
    try:
        with open(name, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CommandError(f"cannot read {name!r}: {exc.strerror}") from None


def split_list(text: str) -> list[str]:
    """``"a,b"`` as ``["a", "b"]`` (``--endpoints``), blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit code 2, as the others."""

    def error(self, message: str) -> Any:
        raise CommandError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``h2pool`` command's parser, with one sub-parser per command."""
    parser = _Parser(prog="h2pool", description="HTTP/2 requests and gRPC calls through h2pool.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    get = commands.add_parser("get", help="send one request; the body to stdout")
    get.add_argument("url", help="http://host[:port]/path or https://...")
    get.add_argument(
        "-X", "--request", dest="method", help="method (default GET, POST with a body)"
    )
    get.add_argument(
        "-H", "--header", dest="headers", action="append", default=[], help="'name: value'"
    )
    body = get.add_mutually_exclusive_group()
    body.add_argument("-d", "--data", help="request body; @FILE reads a file, @- stdin")
    body.add_argument("--json", dest="json_body", help="JSON body (content-type set)")
    get.add_argument("--trailers", action="store_true", help="ask for trailers; print them")
    get.add_argument("--fail", action="store_true", help="exit 22 on HTTP status >= 400")
    get.add_argument("-k", "--insecure", action="store_true", help="skip TLS verification")
    _common(get)

    rpc = commands.add_parser("rpc", help="one raw gRPC unary call; the response to stdout")
    rpc.add_argument("url", help="http://host:port or https://host:port")
    rpc.add_argument("method", help="/package.Service/Method")
    message = rpc.add_mutually_exclusive_group()
    message.add_argument("--data-hex", help="the request message, in hex")
    message.add_argument("--data-file", help="the request message, from a file (- for stdin)")
    rpc.add_argument("-k", "--insecure", action="store_true", help="skip TLS verification")
    _common(rpc)

    bench = commands.add_parser("bench", help="a load generator; the report to stdout")
    bench.add_argument("url", help="http://host[:port]/path or https://...")
    bench.add_argument("-n", "--requests", type=_count, help="requests in all (100)")
    bench.add_argument("-c", "--clients", type=_count, default=10, help="concurrent clients (10)")
    bench.add_argument("--connections", type=_count, default=1, help="connections per endpoint (1)")
    bench.add_argument("--duration", type=_positive, help="seconds to run (with -n: first bound)")
    bench.add_argument("--rate", type=_positive, help="open loop: requests started per second")
    bench.add_argument("-k", "--insecure", action="store_true", help="skip TLS verification")
    _common(bench, verbose=False)
    return parser


def _common(parser: argparse.ArgumentParser, *, verbose: bool = True) -> None:
    if verbose:
        parser.add_argument("-v", "--verbose", action="store_true", help="details on stderr")
    parser.add_argument("--endpoints", type=split_list, help="host:port,host:port to use")
    parser.add_argument(
        "--timeout", type=_positive, default=30.0, help="seconds for the whole call (30)"
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed (without the program name).

    Raises:
        CommandError: A bad or missing argument (argparse's message).
    """
    return build_parser().parse_args(list(argv))
