"""From the pool's target and a request's path and params to the ``:path`` sent.

Pure functions over strings, written to give what httpx gives for the same
``base_url``, path and ``params``: the target's path is a base joined with each
request's path, characters a path or query may not hold are percent-encoded
(existing ``%XX`` escapes are kept), and params are form-encoded after any
query the path already has.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote, urlencode, urlsplit

from .._exceptions import LocalProtocolError

__all__ = ["QueryParams", "Target", "encode_params", "parse_target", "quote", "request_path"]

#: Query parameters: a mapping of name to value (or values), (name, value) pairs, or a str.
QueryParams: TypeAlias = (
    Mapping[str, str | int | float | bool | Sequence[str | int | float | bool] | None]
    | Sequence[tuple[str, str | int | float | bool | None]]
    | str
)

# The WHATWG percent-encode sets httpx uses (what a browser leaves as is):
# printable ASCII except these; controls, space and non-ASCII are encoded.
_QUERY_UNSAFE = ' "#<>'
_PATH_UNSAFE = _QUERY_UNSAFE + "?`{}"


def _unsafe_set(unsafe: str) -> re.Pattern[str]:
    """Characters to encode: outside printable ASCII, or in ``unsafe``."""
    return re.compile(f"[^\\x21-\\x7e]|[{re.escape(unsafe)}]")


_PATH_ENCODE = _unsafe_set(_PATH_UNSAFE)
_QUERY_ENCODE = _unsafe_set(_QUERY_UNSAFE)
# A path that quoting leaves as it is, with no query or fragment.
_PLAIN = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in _PATH_UNSAFE) + "]*"
)
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def quote(text: str, *, query: bool = False) -> str:
    """``text`` with what a path (or with ``query``, a query) may not hold percent-encoded.

    UTF-8 bytes of non-ASCII characters, controls, space and the delimiters
    RFC 3986 section 3.3 (3.4) leaves out become ``%XX``. ``%`` is left as
    it is, as httpx leaves it: an existing ``%XX`` stays, and quoting twice
    changes nothing.
    """
    return (_QUERY_ENCODE if query else _PATH_ENCODE).sub(_percent, text)


@dataclass(frozen=True, slots=True)
class Target:
    """The pool's target URL, taken apart.

    Attributes:
        scheme: ``http`` or ``https``.
        authority: ``host[:port]`` as sent in ``:authority`` (no userinfo).
        host: The host name or address (no brackets).
        port: The port, the scheme's default if not given.
        base_path: The path every request's path is joined to, ending in
            ``/`` (just ``/`` without one).
        authorization: ``Basic ...`` from the target's userinfo, or None.
    """

    scheme: str
    authority: str
    host: str
    port: int
    base_path: str
    authorization: str | None


def parse_target(target: object) -> Target:
    """Take the pool's ``target`` apart.

    Raises:
        TypeError: ``target`` is not a str.
        ValueError: Not an ``http(s)://host`` URL, or one with a query or fragment.
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, not {type(target).__name__}")
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"target is not a valid URL ({exc}): {target!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target must be http://host[:port] or https://host[:port]: {target!r}")
    if parts.query or parts.fragment or "?" in target or "#" in target:
        raise ValueError(f"target must have no query or fragment: {target!r}")
    userinfo, _, authority = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    authorization = None
    if user or password:
        # As httpx does: the userinfo becomes Basic credentials (RFC 7617) on
        # every request, never part of :authority (RFC 9113 section 8.3.1).
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    base = _without_dot_segments(quote(parts.path))
    return Target(
        scheme=parts.scheme,
        authority=authority,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=base if base.endswith("/") else base + "/",
        authorization=authorization,
    )


def request_path(base_path: str, path: str, params: object = None) -> str:
    """The ``:path`` of a request: ``path`` joined to ``base_path``, encoded, params added.

    As httpx's ``base_url``: ``path`` goes after ``base_path`` (which ends in
    ``/``) without its leading slashes (see :func:`_joined`), so ``"/users"`` and ``"users"`` both
    give ``/api/v1/users`` under ``/api/v1/``; ``.`` and ``..`` segments are
    resolved. A fragment is not sent.

    Raises:
        ValueError: ``path`` is an absolute URL.
        LocalProtocolError: ``path`` holds an ASCII control character (CR,
            LF, NUL...): refused rather than encoded, as httpx does.
        TypeError: ``params`` is of a wrong type (see :func:`encode_params`).
    """
    if (
        params is None
        and _PLAIN.fullmatch(path)
        and not path.startswith(".")
        and "/." not in path
        and "://" not in path
    ):
        return _joined(base_path, path)  # nothing to encode, resolve or refuse: most requests
    control = _CONTROL.search(path)
    if control is not None:  # refused as httpx refuses it: a CR or LF is no typo
        raise LocalProtocolError(
            f"invalid character {control.group()!r} in path {path!r}: an ASCII control"
        )
    path, _, _fragment = path.partition("#")
    path, mark, query = path.partition("?")
    if "://" in path and urlsplit(path).scheme:
        raise ValueError(f"path must be a path, not a URL (the pool has a target): {path!r}")
    joined = _without_dot_segments(_joined(base_path, quote(path)))
    if mark:
        query = quote(query, query=True)
    extra = encode_params(params) if params is not None else ""
    if extra:
        query = f"{query}&{extra}" if query else extra
    return f"{joined}?{query}" if mark or extra else joined


def _joined(base_path: str, path: str) -> str:
    """``path`` after ``base_path``; without a base path, an absolute path is kept whole.

    ``"//x"`` stays ``//x`` (an empty first segment is a legal path, as an
    httpx request to ``http://h//x`` sends it through the transport), where
    a base path takes it as relative, as httpx's ``base_url`` does.
    """
    if base_path == "/" and path[:1] == "/":
        return path
    return base_path + path.lstrip("/")


def _without_dot_segments(path: str) -> str:
    """``path`` with ``.`` and ``..`` segments resolved (RFC 3986 section 5.2.4), as httpx does."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept and kept != [""]:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept) or "/"  # "/." and "/.." leave the root


_SCALARS = (str, int, float, bool)


def _param_value(name: str, value: object) -> str:
    # As httpx: JSON's true and false, None as an empty value.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, _SCALARS):
        return str(value)
    raise TypeError(
        f"params: value of {name!r} must be str, int, float, bool or None, "
        f"not {type(value).__name__}"
    )


def encode_params(params: object) -> str:
    """Query parameters form-encoded (``application/x-www-form-urlencoded``), as httpx does.

    ``params`` is a mapping of name to a value or a list or tuple of values
    (a repeated name), a sequence of ``(name, value)`` pairs, or a str taken
    as an already written query (percent-encoded where needed). Values are
    str, int, float, bool (``true``/``false``) or None (empty).

    Raises:
        TypeError: ``params`` or one of its names or values is of a wrong type.
    """
    if isinstance(params, str):
        return quote(params.lstrip("?"), query=True)
    pairs: list[tuple[str, str]] = []
    if isinstance(params, Mapping):
        for name, value in params.items():
            _check_name(name)
            values = value if isinstance(value, list | tuple) else (value,)
            pairs.extend((name, _param_value(name, item)) for item in values)
    elif isinstance(params, Sequence) and not isinstance(params, bytes | bytearray):
        for item in params:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise TypeError(f"params: each item must be a (name, value) pair, not {item!r}")
            _check_name(item[0])
            pairs.append((item[0], _param_value(item[0], item[1])))
    else:
        raise TypeError(
            "params must be a mapping, a sequence of (name, value) pairs or a str, "
            f"not {type(params).__name__}"
        )
    return urlencode(pairs)


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"params: names must be str, not {type(name).__name__}")
