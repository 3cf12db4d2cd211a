"""recv_whole_response: headers, body and trailers in one call, as the three calls give them."""

from __future__ import annotations

import pytest

import h2pool
from tests.servers import Server, echo


async def test_whole_response_matches_the_three_calls() -> None:
    # Windows far below the body: the body only arrives if it is read as it comes.
    small = h2pool.H2Config(stream_window=65_535, connection_window=65_535)
    body = bytes(range(256)) * 4096  # 1 MiB
    async with Server(echo) as server:
        client = await h2pool.open_connection(
            "127.0.0.1", server.port, functional_timeout=5, config=small
        )
        try:
            request = {":method": "POST", ":path": "/", "x-tag": "a"}
            first = await client.start_request(request)
            await client.send_data(first, body, end_stream=True)
            headers, content, trailers = await client.recv_whole_response(first)
            assert content == body
            assert trailers == [("x-tag", "a")]
            assert dict(headers)[":status"] == "200"

            second = await client.start_request(request)
            await client.send_data(second, body, end_stream=True)
            assert headers == await client.recv_response(second)
            assert content == await client.read_stream(second, -1)
            assert trailers == await client.recv_trailers(second)
            assert client.open_streams == 0
        finally:
            await client.shutdown(timeout=5)


async def test_whole_response_raises_the_streams_error() -> None:
    async with Server(echo) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port, functional_timeout=5)
        try:
            stream_id = await client.start_request({":method": "POST", ":path": "/"})
            client.reset_stream(stream_id)
            with pytest.raises(h2pool.StreamClosed) as caught:
                await client.recv_whole_response(stream_id)
            assert caught.value.stream_id == stream_id
            assert client.open_streams == 0
        finally:
            await client.shutdown(timeout=5)
