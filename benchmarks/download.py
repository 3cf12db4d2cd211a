"""Single-stream download throughput from nghttpd (h2c) for several window sizes.

Starts nghttpd on 127.0.0.1 serving a generated file, downloads it with
h2pool's core client once per window setting, and with curl for reference,
all in one run; prints MiB/s and the ratio to the default setting.

Run: python benchmarks/download.py [--size-mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h2pool
from tests.peers import Nghttpd

KIB, MIB = 1024, 1024 * 1024


async def download(port: int, config: h2pool.H2Config) -> float:
    client = await h2pool.open_connection("127.0.0.1", port, config=config)
    start = time.perf_counter()
    stream_id = await client.start_request({":method": "GET", ":path": "/file"}, end_stream=True)
    await client.recv_response(stream_id)
    size = 0
    while chunk := await client.read_stream(stream_id):
        size += len(chunk)
    elapsed = time.perf_counter() - start
    client.close_connection()
    return size / MIB / elapsed


def curl(port: int, size_mib: int) -> float:
    url = f"http://127.0.0.1:{port}/file"
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", os.devnull, url], check=True)
    return size_mib / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = {
        "64 KiB / 64 KiB (HTTP/2 defaults)": h2pool.H2Config(
            stream_window=65_535, connection_window=65_535
        ),
        "1 MiB / 2 MiB": h2pool.H2Config(stream_window=1 * MIB, connection_window=2 * MIB),
        "4 MiB / 8 MiB": h2pool.H2Config(stream_window=4 * MIB, connection_window=8 * MIB),
        "4 MiB / 16 MiB (h2pool default)": h2pool.H2Config(),
        "4 MiB / 16 MiB, 64 KiB frames": h2pool.H2Config(max_frame_size=64 * KIB),
        "16 MiB / 32 MiB": h2pool.H2Config(stream_window=16 * MIB, connection_window=32 * MIB),
    }
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp, "file"), "wb") as f:
            f.write(os.urandom(args.size_mib * MIB))
        results: dict[str, list[float]] = {name: [] for name in settings}
        results["curl (reference)"] = []
        with Nghttpd(
            Path(tmp), extra_args=["--window-bits=24", "--connection-window-bits=25"]
        ) as server:
            for _ in range(args.rounds):
                for name, config in settings.items():
                    results[name].append(asyncio.run(download(server.port, config)))
                if shutil.which("curl"):
                    results["curl (reference)"].append(curl(server.port, args.size_mib))
    default = max(results["4 MiB / 16 MiB (h2pool default)"])
    print(f"{args.size_mib} MiB single-stream download from nghttpd h2c, best of {args.rounds}:")
    for name, values in results.items():
        if values:
            best = max(values)
            print(f"  {name:38s} {best:8.1f} MiB/s  {best / default:5.2f}x default")


if __name__ == "__main__":
    main()
