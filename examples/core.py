"""The core protocol module in one file: a server and a client on one connection.

The server answers each request with "hello, " followed by the request body,
and a trailer ``len`` with the body's length. The client waits until the
connection is proven functional (a tickless PING), prints the round-trip
time, then makes one request.

Run: python examples/core.py
"""

from __future__ import annotations

import asyncio

import h2pool


async def on_connected(proto: h2pool.H2Protocol) -> None:
    """Serve requests on one server-side connection until it closes."""
    try:
        while True:
            # Receive a request from the queue.
            stream_id, _headers = await proto.recv_request()
            # Send response headers, and the start of the body.
            await proto.start_response(stream_id, {":status": "200"})
            await proto.send_data(stream_id, b"hello, ")
            # Read the whole request body: a name.
            name = await proto.read_stream(stream_id, -1)
            # Finish the body with the name, then trailers with its length.
            await proto.send_data(stream_id, name)
            await proto.send_trailers(stream_id, {"len": str(len(name))})
    except h2pool.H2ConnectionError:
        pass  # the client went away


async def main() -> None:
    loop = asyncio.get_running_loop()
    # Start a server on a free port, with at most 3 concurrent requests.
    server = await h2pool.start_server(
        lambda p: loop.create_task(on_connected(p)), "127.0.0.1", 0, concurrency=3
    )
    port = server.sockets[0].getsockname()[1]

    # Open a client connection whose health is checked by tickless pings.
    client = await h2pool.open_connection("127.0.0.1", port, functional_timeout=0.1)

    # Optionally wait for an ack of a tickless ping, i.e. until functional.
    await asyncio.sleep(0.1)  # simulate a client busy with something else
    rtt = await client.wait_functional()
    print(f"Round-trip time: {rtt * 1000:.1f}ms")

    # Start a request and send the name "world" as the whole body.
    stream_id = await client.start_request({":method": "GET", ":path": "/index.html"})
    await client.send_data(stream_id, b"world", end_stream=True)

    # Receive the response headers, the whole body, then the trailers.
    headers = await client.recv_response(stream_id)
    print("Response headers:", headers)
    body = await client.read_stream(stream_id, -1)
    print("Response body:", body)
    trailers = await client.recv_trailers(stream_id)
    print("Response trailers:", trailers)

    await client.shutdown()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
