"""A small HTTP server on 127.0.0.1 (random port) that misbehaves on request, for download tests.

    with FakeServer() as srv:
        srv.add("/a.bin", data, drop_first=1)       # the first transfer stops halfway
        srv.add("/b.bin", data, fail_first=[500])   # one HTTP 500, then the file
        url = srv.url("/a.bin")
        srv.hits("/a.bin")                           # the requests seen: [{"range": ..., "status": ...}]
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    ranges: bool = True  # honour Range requests with 206
    drop_first: int = 0  # this many transfers send half the body, then close the connection
    fail_first: list[int] = field(default_factory=list)  # statuses answered before the file
    status: int = 200  # a fixed status (e.g. 404) instead of the body
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (slow transfers)
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    handler: Callable | None = None  # handler(request_handler, query) does everything itself


class FakeServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                route = server.routes.get(parts.path)
                record = {"path": parts.path, "query": query, "range": self.headers.get("Range"), "cookie": self.headers.get("Cookie"), "status": None}
                with server.lock:
                    server.log.append(record)
                if route is None:
                    record["status"] = 404
                    return self._plain(404, b"not found")
                if route.handler is not None:
                    record["status"] = "custom"
                    return route.handler(self, query)
                with server.lock:
                    failing = route.fail_first.pop(0) if route.fail_first else None
                if failing is not None:
                    record["status"] = failing
                    return self._plain(failing, b"try again later", route.headers)
                if route.status != 200:
                    record["status"] = route.status
                    return self._plain(route.status, b"nope", route.headers)
                body = route.body
                start = 0
                rng = self.headers.get("Range")
                status = 200
                if rng and route.ranges and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(body):
                        record["status"] = 416
                        return self._plain(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    status = 206
                payload = body[start:]
                record["status"] = status
                self.send_response(status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                with server.lock:
                    drop = route.drop_first > 0
                    if drop:
                        route.drop_first -= 1
                if drop:
                    record["dropped"] = True
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                for i in range(0, len(payload), 1 << 16):
                    if route.chunk_delay:
                        time.sleep(route.chunk_delay)
                    self.wfile.write(payload[i:i + (1 << 16)])
                self.wfile.flush()

            def _plain(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def send_page(self, html: str, headers: dict | None = None, status: int = 200) -> None:
                data = html.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def send_file(self, data: bytes, headers: dict | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a client hanging up is expected here
                server.errors += 1

        self.errors = 0
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body: bytes = b"", **kwargs) -> Route:
        route = Route(body=body, **kwargs)
        self.routes[path] = route
        return route

    def hits(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.log if r["path"] == path]


# Helpers for registries and payloads.


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_registry(path, entries: list[dict]) -> str:
    path.write_text(json.dumps({"format": 1, "artifacts": entries}))
    return str(path)


def url_entry(name: str, url: str, file: str, kind: str = "weights", **extra) -> dict:
    return {"name": name, "kind": kind, "description": f"test {name}", "source": {"type": "url", "url": url}, "file": file, **extra}
