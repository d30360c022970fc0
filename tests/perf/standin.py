"""The vendor stand-in: nginx answering every chat completion with one fixed body, so it is never the bottleneck.

Paths (nginx cannot cheaply read request bodies, so streams are told apart by path, not by `"stream": true`):

    POST /sse/<anything>/chat/completions   -> a fixed SSE stream (20 content chunks, a finish chunk, a usage
                                               chunk, [DONE]), `text/event-stream`
    POST /<anything>/chat/completions       -> a fixed `chat.completion` JSON with usage
    GET  /healthz                           -> 200

The benchmarks point each provider's `api_base` at `http://127.0.0.1:<port>/<provider>/v1` for non-streaming
runs and at `http://127.0.0.1:<port>/sse/<provider>/v1` for streaming runs.

Where nginx cannot be installed, `AsyncioStandIn` serves the same bytes from a minimal asyncio server in its own
process (the report says so: it is slower than nginx and shares the two cores less politely).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

_WORDS = ("The cheapest deployment that meets the constraints is chosen for every request, and the gateway "
          "records what each one cost in the ledger so that the monthly report matches the vendor invoices. ")


def chat_completion_body() -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-bench0001", "object": "chat.completion", "created": 1715000000, "model": "bench-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": _WORDS * 2}}],
        "usage": {"prompt_tokens": 231, "completion_tokens": 76, "total_tokens": 307},
        "system_fingerprint": "fp_bench",
    })


def sse_body(chunks: int = 20) -> bytes:
    words = _WORDS.split(" ")
    head = {"id": "chatcmpl-bench0001", "object": "chat.completion.chunk", "created": 1715000000,
            "model": "bench-model", "system_fingerprint": "fp_bench"}
    events = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    for i in range(chunks):
        events.append({**head, "choices": [{"index": 0, "delta": {"content": words[i % len(words)] + " "},
                                            "finish_reason": None}]})
    events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**head, "choices": [], "usage": {"prompt_tokens": 231, "completion_tokens": chunks,
                                                    "total_tokens": 231 + chunks}})
    out = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n"


def _check_literal(body: bytes) -> str:
    text = body.decode()
    if "'" in text or "$" in text or "\\" in text:
        raise ValueError("fixture must not contain ', $ or \\ (it is inlined in nginx.conf)")
    return text


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
user root;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_max_body_size 16m;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{ return 200 'ok'; }}
        # The stream is longer than an nginx config string may be: a static file. POST to a static file is
        # 405, which error_page turns into an internal GET of the same file answered 200.
        location /fixtures/ {{ internal; root {run}; default_type text/event-stream; }}
        location ~ ^/sse/.*/chat/completions$ {{
            root {run};
            rewrite ^ /fixtures/sse.txt break;
            error_page 405 =200 /fixtures/sse.txt;
        }}
        location ~ /chat/completions$ {{
            default_type application/json;
            return 200 '{json}';
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str = "/healthz", timeout: float = 20.0, proc: subprocess.Popen | None = None
              ) -> float:
    """Poll until GET path answers 200; returns the seconds waited."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.perf_counter() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering {path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(req)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"nothing answered 200 on 127.0.0.1:{port}{path} within {timeout}s")


class StandIn:
    """Started with `start()`, stopped with `stop()`; `kind` is "nginx" or "asyncio"."""

    kind = ""
    port = 0
    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class NginxStandIn(StandIn):
    kind = "nginx"

    def __init__(self, nginx: str) -> None:
        self.nginx = nginx
        self.dir = Path(tempfile.mkdtemp(prefix="gw-bench-nginx-"))

    def start(self) -> None:
        self.port = free_port()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir(exist_ok=True)
        (self.dir / "fixtures").mkdir(exist_ok=True)
        (self.dir / "fixtures" / "sse.txt").write_bytes(sse_body())
        conf = NGINX_CONF.format(run=self.dir, port=self.port, json=_check_literal(chat_completion_body()))
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen([self.nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_http(self.port, proc=self.proc)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class AsyncioStandIn(StandIn):
    """The fallback: this module run as a script (`python -m tests.perf.standin PORT`)."""

    kind = "asyncio"

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.perf.standin", str(self.port)],
                                     cwd=Path(__file__).resolve().parents[2])
        wait_http(self.port, proc=self.proc)


def _response(body: bytes, ctype: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: keep-alive\r\n\r\n" + body)


class _Vendor(asyncio.Protocol):
    JSON = _response(chat_completion_body(), b"application/json")
    SSE = _response(sse_body(), b"text/event-stream")
    OK = _response(b"ok", b"text/plain")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.t.write(self.answer(head.split(" ", 2)[1]))

    def answer(self, path: str) -> bytes:
        return self.SSE if path.startswith("/sse/") else self.JSON if path.endswith("/chat/completions") else self.OK


def _serve(port: int, protocol: type[asyncio.Protocol] = _Vendor) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
