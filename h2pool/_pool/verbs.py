"""The method shortcuts (``get``, ``post``, ...), written once for the async and the blocking pool.

Each is ``request()`` with its method filled in; ``R`` is what ``request()``
returns (an awaitable ``Response`` for :class:`~h2pool.Pool`, a ``Response``
for :class:`~h2pool.SyncPool`) and ``C`` the bodies it takes.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from .._core.headers import HeadersIn
from .urls import QueryParams

__all__ = ["DEFAULT", "QueryParams", "Verbs"]

R = TypeVar("R", covariant=True)
C = TypeVar("C", contravariant=True)  # the bodies it takes (sync iterables too for SyncPool)

DEFAULT: Any = object()
"""The ``timeout`` and ``hedge`` default: "the pool's" (None means no bound, no hedging)."""


class Verbs(Generic[R, C]):
    """``get``, ``post``, ``put``, ``patch``, ``delete``, ``head`` and ``options``."""

    def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: C | None = None,
        json: Any = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """Send a request and read its whole response (see :meth:`h2pool.Pool.request`)."""
        raise NotImplementedError  # pragma: no cover - each pool defines it

    def get(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("GET", ...)``."""
        return self.request(
            "GET",
            path,
            params=params,
            headers=headers,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )

    def head(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("HEAD", ...)``."""
        return self.request(
            "HEAD",
            path,
            params=params,
            headers=headers,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )

    def options(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("OPTIONS", ...)``."""
        return self.request(
            "OPTIONS",
            path,
            params=params,
            headers=headers,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )

    def delete(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("DELETE", ...)``."""
        return self.request(
            "DELETE",
            path,
            params=params,
            headers=headers,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )

    def post(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: C | None = None,
        json: Any = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("POST", ...)``."""
        return self.request(
            "POST",
            path,
            params=params,
            headers=headers,
            content=content,
            json=json,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )

    def put(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: C | None = None,
        json: Any = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("PUT", ...)``."""
        return self.request(
            "PUT",
            path,
            params=params,
            headers=headers,
            content=content,
            json=json,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )

    def patch(
        self,
        path: str = "",
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: C | None = None,
        json: Any = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> R:
        """``request("PATCH", ...)``."""
        return self.request(
            "PATCH",
            path,
            params=params,
            headers=headers,
            content=content,
            json=json,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )
