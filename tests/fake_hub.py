"""A tiny Hugging Face Hub on 127.0.0.1 for download-hf tests (this machine has no internet).

It serves the routes huggingface_hub calls to list and fetch a model repo:
``GET /api/models/<repo>/revision/<revision>`` (repo_info: the commit and file names),
``GET /api/models/<repo>/tree/<revision>`` (the file list) and ``HEAD``/``GET
/<repo>/resolve/<revision>/<path>`` (metadata headers, then the bytes). Repos marked private
answer 401 unless the request carries ``Authorization: Bearer <token>``. Point HF_ENDPOINT at
``FakeHub.url``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    """``repos``: {repo_id: {path: bytes}}; ``private``: {repo_id: token}."""

    def __init__(self, repos: dict[str, dict[str, bytes]], private: dict[str, str] | None = None):
        self.repos = repos
        self.private = private or {}
        self.requests: list[tuple[str, str]] = []
        self.commit = hashlib.sha1(b"fake-hub").hexdigest()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ routing

    def _find_repo(self, parts: list[str]) -> tuple[str, list[str]] | None:
        for n in (2, 1):
            repo = "/".join(parts[:n])
            if repo in self.repos:
                return repo, parts[n:]
        return None

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"]:
            found = self._find_repo(parts[2:])
            if found is None or not found[1] or found[1][0] not in ("tree", "revision"):
                return self._error(h, 404, "RepoNotFound", body)
            repo = found[0]
            if not self._authorized(h, repo):
                return self._error(h, 401, "RepoNotFound", body)
            if found[1][0] == "revision":  # repo_info (snapshot_download asks it first)
                info = {
                    "id": repo,
                    "sha": self.commit,
                    "siblings": [{"rfilename": n} for n in sorted(self.repos[repo])],
                }
                return self._send(h, 200, json.dumps(info).encode(), "application/json", body)
            listing = [
                {
                    "type": "file",
                    "oid": hashlib.sha1(data).hexdigest(),
                    "size": len(data),
                    "path": name,
                }
                for name, data in sorted(self.repos[repo].items())
            ]
            return self._send(h, 200, json.dumps(listing).encode(), "application/json", body)
        found = self._find_repo(parts)
        if found is None or len(found[1]) < 3 or found[1][0] != "resolve":
            return self._error(h, 404, "RepoNotFound", body)
        repo, rest = found
        if not self._authorized(h, repo):
            return self._error(h, 401, "RepoNotFound", body)
        filename = "/".join(rest[2:])
        data = self.repos[repo].get(filename)
        if data is None:
            return self._error(h, 404, "EntryNotFound", body)
        headers = {
            "X-Repo-Commit": self.commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
        }
        return self._send(h, 200, data, "application/octet-stream", body, headers)

    def _authorized(self, h: BaseHTTPRequestHandler, repo: str) -> bool:
        token = self.private.get(repo)
        return token is None or h.headers.get("Authorization") == f"Bearer {token}"

    def _error(self, h, status: int, code: str, body: bool) -> None:
        payload = json.dumps({"error": code}).encode()
        self._send(h, status, payload, "application/json", body, {"X-Error-Code": code})

    @staticmethod
    def _send(h, status, data: bytes, ctype: str, body: bool, headers=None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if body:
            h.wfile.write(data)


def tiny_repos(rng) -> tuple[dict[str, dict[str, bytes]], dict[str, dict]]:
    """Two tiny repos (single-file and sharded) and the tensors they hold."""
    import numpy as np
    from safetensors.numpy import save

    single = {
        "embed.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "embed.bias": rng.standard_normal(8).astype(np.float16),
    }
    shard1 = {
        "layer.0.weight": rng.standard_normal((8, 8)).astype(np.float32),
        "layer.0.steps": np.arange(5, dtype=np.int64),
    }
    shard2 = {"layer.1.weight": rng.standard_normal((8, 4)).astype(np.float32)}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {
        "metadata": {"total_size": sum(a.nbytes for s in (shard1, shard2) for a in s.values())},
        "weight_map": {**{k: names[0] for k in shard1}, **{k: names[1] for k in shard2}},
    }
    repos = {
        "tiny/single": {
            "config.json": b'{"model_type": "tiny"}',
            "model.safetensors": save(single, metadata={"format": "np"}),
        },
        "tiny/sharded": {
            "config.json": b'{"model_type": "tiny"}',
            names[0]: save(shard1, metadata={"format": "np"}),
            names[1]: save(shard2, metadata={"format": "np"}),
            "model.safetensors.index.json": json.dumps(index).encode(),
        },
    }
    tensors = {"tiny/single": single, "tiny/sharded": {**shard1, **shard2}}
    return repos, tensors
