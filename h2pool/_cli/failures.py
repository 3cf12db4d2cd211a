"""What a failed command tells the user: one line and an exit code (curl's numbers).

A pure mapping from the exception to the message; no traceback ever reaches
the terminal.
"""

from __future__ import annotations

import enum
import socket
import ssl

from .._exceptions import CertificateVerifyError, ConnectError, H2PoolError, H2TimeoutError
from .._rpc.errors import RpcError


class Exit(enum.IntEnum):
    """The command's exit codes: curl's where curl has one for the same cause."""

    OK = 0
    FAILED = 1
    USAGE = 2
    BAD_URL = 3
    UNRESOLVED = 6
    CONNECT = 7
    HTTP_ERROR = 22
    TIMEOUT = 28
    TLS = 35
    INTERRUPTED = 130


class CommandError(Exception):
    """A cause the command found itself (a bad argument, a bad URL): its message and exit code."""

    def __init__(self, message: str, exit_code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and its chain of causes and contexts, without loops."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


# A failed gRPC call exits with 64 + its status code, as grpcurl does.
RPC_STATUS_BASE = 64


def classify(error: BaseException) -> int:
    """The exit code for ``error``, from the first cause that says what happened."""
    chain = _causes(error)
    if isinstance(error, CommandError):
        return error.exit_code
    if isinstance(error, RpcError):
        return RPC_STATUS_BASE + error.code()
    if any(isinstance(cause, socket.gaierror) for cause in chain):
        return Exit.UNRESOLVED
    if isinstance(error, CertificateVerifyError) or any(
        isinstance(cause, ssl.SSLError) for cause in chain
    ):
        return Exit.TLS
    if isinstance(error, H2TimeoutError):
        return Exit.TIMEOUT
    if isinstance(error, ConnectError):
        return Exit.CONNECT
    return Exit.FAILED


def describe(error: BaseException) -> str:
    """The one line the command prints for ``error`` (without the ``h2pool: error:`` prefix)."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, H2PoolError | CommandError):
        message = f"{type(error).__name__}: {message}"
    return message
