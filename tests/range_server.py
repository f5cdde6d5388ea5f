"""A local HTTP file server for the remote-read tests and benchmark/remote_perf.py.

It serves the files under one folder (GET and HEAD, single ``Range`` requests incl. suffix
ranges, ``ETag`` from the file's inode, size and mtime, ``If-Match``), counts every request
it answers, and can misbehave on demand: ignore ``Range``, truncate bodies, send the wrong
range, or wait a fixed delay before each answer (an object store's latency). Loopback only;
it stops with ``close()`` (or the ``with`` block).
"""

from __future__ import annotations

import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeServer:
    """Serve ``root`` on 127.0.0.1 (a free port). Knobs, changeable while it runs:
    ``ignore_range``, ``truncate`` (send half of each body), ``shift`` (answer a range
    request with the bytes that many further on, labelled as asked), ``misplace`` (answer
    with the range that many bytes further on, labelled as what it is), ``widen`` (answer a
    suffix request with that many bytes more, labelled as what it is), ``delay`` (seconds
    before each answer). ``headers`` holds each request's headers."""

    def __init__(self, root: str, *, delay: float = 0.0) -> None:
        self.root = os.path.abspath(root)
        self.delay = delay
        self.ignore_range = False
        self.truncate = False
        self.shift = 0
        self.misplace = 0
        self.widen = 0
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                server._answer(self, head=True)

            def do_GET(self) -> None:
                server._answer(self, head=False)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 drops bursts of concurrent connects

            def handle_error(self, request, client_address) -> None:  # a client gone: quiet
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, _, _ in self.requests if method is None or m == method)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.headers.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RangeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ answering

    def _answer(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        rng = h.headers.get("Range")
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", h.path, rng))
            self.headers.append(dict(h.headers))
        if self.delay:
            time.sleep(self.delay)
        path = os.path.join(self.root, h.path.split("?", 1)[0].lstrip("/"))
        if os.path.commonpath([self.root, os.path.abspath(path)]) != self.root:
            return self._status(h, 403)
        try:
            st = os.stat(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(path)
        except OSError:
            return self._status(h, 404)
        size = st.st_size
        etag = f'"{st.st_ino:x}-{size:x}-{st.st_mtime_ns:x}"'
        match = h.headers.get("If-Match")
        if match is not None and match != etag:
            return self._status(h, 412)
        start, end, status = 0, size, 200
        if rng and not self.ignore_range:
            m = _RANGE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                return self._status(h, 416, size)
            first, last = m.groups()
            if not first:  # suffix: the last N bytes (``widen`` more when lying)
                start, end = max(0, size - int(last) - self.widen), size
            else:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            if start >= size:
                return self._status(h, 416, size)
            if self.misplace and first:
                start = min(start + self.misplace, size - 1)
                end = min(end + self.misplace, size)
            status = 206
        h.send_response(status)
        h.send_header("Content-Length", str(end - start))
        h.send_header("ETag", etag)
        h.send_header("Accept-Ranges", "none" if self.ignore_range else "bytes")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        h.end_headers()
        if head:
            return
        data_start = start + (self.shift if status == 206 else 0)
        with open(path, "rb") as f:
            f.seek(data_start)
            data = f.read(end - start)
        if len(data) < end - start:
            data += b"\0" * (end - start - len(data))
        if self.truncate:
            data = data[: len(data) // 2]
            h.close_connection = True
        try:
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            pass

    @staticmethod
    def _status(h: BaseHTTPRequestHandler, code: int, size: int | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "0")
        if size is not None:
            h.send_header("Content-Range", f"bytes */{size}")
        h.end_headers()
