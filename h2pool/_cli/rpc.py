"""``h2pool rpc``: one raw gRPC unary call through ``h2pool.rpc``; bytes in, bytes out."""

from __future__ import annotations

import argparse
from typing import BinaryIO, TextIO

from .._rpc.channel import Channel
from .._rpc.errors import RpcError
from .._rpc.metadata import Metadata
from .arguments import read_input, split_url
from .failures import CommandError, Exit
from .output import fields, note
from .pools import checked_target, pool_options


def read_message(args: argparse.Namespace, stdin: BinaryIO) -> bytes:
    """The request message ``--data-hex`` or ``--data-file`` gives (empty without either).

    Raises:
        CommandError: Not hex, or a file that cannot be read.
    """
    if args.data_hex is not None:
        try:
            return bytes.fromhex(args.data_hex)
        except ValueError as exc:
            raise CommandError(f"--data-hex is not hex: {exc}") from None
    if args.data_file is None:
        return b""
    return read_input(args.data_file, stdin)


def _metadata(metadata: Metadata | None, stderr: TextIO) -> None:
    for key, value in metadata or ():
        fields("<", [(key, value if isinstance(value, str) else value.hex())], stderr)


async def rpc(args: argparse.Namespace, stdout: BinaryIO, stderr: TextIO, stdin: BinaryIO) -> Exit:
    """Make the call ``args`` describe; write the response message to ``stdout``.

    Raises:
        CommandError: A bad argument.
        RpcError: The call ended with a status other than OK.
    """
    target = split_url(args.url)
    if not args.method.startswith("/") or args.method.count("/") != 2:
        raise CommandError(f"bad method {args.method!r}: expected /package.Service/Method")
    message = read_message(args, stdin)
    with checked_target():
        channel = Channel(target.base, **pool_options(args))
    async with channel:
        call = channel.unary_unary(args.method)(message, timeout=args.timeout)
        try:
            reply: bytes = await call
        except RpcError as exc:
            if args.verbose:
                note(f"status {exc.code().name}: {exc.details()}", stderr)
                _metadata(exc.trailing_metadata(), stderr)
            raise
        if args.verbose:
            note(f"status {(await call.code()).name}: {await call.details()}", stderr)
            _metadata(await call.trailing_metadata(), stderr)
    stdout.write(reply)
    stdout.flush()
    return Exit.OK
