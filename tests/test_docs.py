"""Every Python example in the README and in docs/ runs, against local stand-ins.

The examples name illustrative hosts and files (``10.0.0.5:8080``,
``https://api.internal``, ``/etc/pki/ca.pem``) so that they read like real
code. Each runs here unchanged but for those names, which the table
``_STAND_INS`` points at servers and files the test makes: h2pool servers on
127.0.0.1 (h2c, and TLS with a certificate from a test CA that the example's
process trusts through ``SSL_CERT_FILE``; grpcio servers for the gRPC
examples, with the ``demo`` stubs grpcio-tools generates importable). Each
example runs in its own Python process, bounded in time, and must exit 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import h2pool
import h2pool.events
import h2pool.rpc
from tests.peers.grpc_codegen import GreeterServer, generate
from tests.peers.grpc_server import GrpcTestServer
from tests.servers import Server

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

# Illustrative names in the docs, and what they stand for here.
_STAND_INS = {
    "10.0.0.5:8080": "127.0.0.1:{h2c0}",
    "10.0.0.6:8080": "127.0.0.1:{h2c1}",
    "10.0.0.7:8080": "127.0.0.1:{h2c2}",
    "https://api.internal": "https://localhost:{tls}",
    "https://payments.internal": "https://localhost:{tls}",
    "/etc/pki/internal-ca.pem": "{ca}",
    "/etc/pki/ca.pem": "{ca}",
    "/etc/pki/client.pem": "{client_cert}",
    "/etc/pki/client.key": "{client_key}",
    "echo.internal:50051": "127.0.0.1:{grpc0}",
    "10.0.0.5:50051": "127.0.0.1:{grpc0}",
    "10.0.0.6:50051": "127.0.0.1:{grpc1}",
    "greeter.internal:50051": "127.0.0.1:{greeter}",
}

# Runs one example: top-level ``await`` is allowed, as in an asyncio REPL.
_RUNNER = """
import ast, asyncio, inspect, sys
source = sys.stdin.read()
code = compile(source, "<example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__main__"})
if inspect.iscoroutine(result):
    asyncio.run(result)
"""


def _examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for index, match in enumerate(_BLOCK.finditer(path.read_text())):
            found.append((f"{path.relative_to(ROOT)}#{index + 1}", match.group(1)))
    return found


EXAMPLES = _examples()


async def _answer(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
    """Any request: read its body, answer 200 with a body and a trailer."""
    body = await proto.read_stream(stream_id, -1)
    path = dict(headers)[":path"]
    await proto.start_response(stream_id, {":status": "200", "content-type": "text/plain"})
    await proto.send_data(stream_id, f"{path}: {len(body)} bytes received".encode())
    await proto.send_trailers(stream_id, {"x-received": str(len(body))})


@dataclass
class StandIns:
    """The local servers and files the examples' names stand for."""

    values: dict[str, str]
    ca: Path
    python_path: str


@dataclass
class GrpcStandIns:
    """grpcio servers for the gRPC examples, and where the generated ``demo`` stubs are."""

    values: dict[str, str]
    stubs: Path


@pytest.fixture(scope="module")
def grpc_stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcStandIns]:
    stubs = tmp_path_factory.mktemp("stubs")
    modules = generate(stubs)
    with GrpcTestServer() as grpc0, GrpcTestServer() as grpc1, GreeterServer(modules) as greeter:
        values = {"grpc0": str(grpc0.port), "grpc1": str(grpc1.port), "greeter": str(greeter.port)}
        yield GrpcStandIns(values, stubs)


@pytest.fixture
async def stand_ins(tmp_path: Path, grpc_stand_ins: GrpcStandIns) -> AsyncIterator[StandIns]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("client.example")
    files = {
        "ca": tmp_path / "ca.pem",
        "server": tmp_path / "server.pem",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client_cert.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client_cert.private_key_pem.write_to_path(str(files["client_key"]))
    tls = h2pool.server_ssl_context(str(files["server"]))
    tls.set_alpn_protocols(["h2", "http/1.1"])
    async with (
        Server(_answer) as h2c0,
        Server(_answer) as h2c1,
        Server(_answer) as h2c2,
        Server(_answer, ssl=tls) as tls_server,
    ):
        values = {
            "h2c0": str(h2c0.port),
            "h2c1": str(h2c1.port),
            "h2c2": str(h2c2.port),
            "tls": str(tls_server.port),
            "ca": str(files["ca"]),
            "client_cert": str(files["client_cert"]),
            "client_key": str(files["client_key"]),
            **grpc_stand_ins.values,
        }
        yield StandIns(values, files["ca"], f"{ROOT}{os.pathsep}{grpc_stand_ins.stubs}")


def localize(source: str, values: dict[str, str]) -> str:
    """The example with each illustrative name replaced by its stand-in."""
    for name, stand_in in _STAND_INS.items():
        source = source.replace(name, stand_in.format(**values))
    return source


def test_docs_have_examples() -> None:
    # The parametrization below must not silently find nothing.
    assert len(EXAMPLES) >= 8


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("where", "source"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
async def test_example_runs(where: str, source: str, stand_ins: StandIns) -> None:
    code = localize(source, stand_ins.values)
    env = dict(os.environ, SSL_CERT_FILE=str(stand_ins.ca), PYTHONPATH=stand_ins.python_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RUNNER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        async with asyncio.timeout(45):
            out, err = await process.communicate(code.encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{where} failed:\n{code}\n--- stderr:\n{err.decode()}"
    assert b"Traceback" not in err, err.decode()
    assert out or "print(" not in code, f"{where} printed nothing"


@pytest.mark.parametrize(
    "module", [h2pool, h2pool.rpc, h2pool.events], ids=["h2pool", "h2pool.rpc", "h2pool.events"]
)
def test_reference_lists_every_public_name(module: types.ModuleType) -> None:
    reference = (ROOT / "docs" / "reference.md").read_text()
    prefix = re.escape(module.__name__)
    listed = set(re.findall(rf"(?:^::: |`){prefix}\.(\w+)\b(?!\.)", reference, re.MULTILINE))
    missing = sorted(set(module.__all__) - listed)
    assert missing == [], f"docs/reference.md does not list {missing}"
    unknown = sorted(name for name in listed if not hasattr(module, name))
    assert unknown == [], f"docs/reference.md lists names {module.__name__} lacks: {unknown}"
