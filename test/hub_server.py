"""A Hugging Face hub on loopback, for download tests: serves repos the way huggingface_hub 2.x
reads them, with faults on demand.

Endpoints (what huggingface_hub calls):
- GET /api/models/{org}/{name}/revision/{rev}[?blobs=true]: the commit (`sha`) and `siblings`
  with size, blobId and, for LFS files, lfs.sha256 / lfs.size (HfApi.model_info);
- HEAD and GET /{org}/{name}/resolve/{rev}/{path}: X-Repo-Commit, ETag (the git blob sha1, or
  the sha256 for LFS files), X-Linked-Etag and X-Linked-Size for LFS files, Content-Length,
  Accept-Ranges, and `Range: bytes=N-` answered 206 with Content-Range. No X-Xet-* headers, so
  huggingface_hub never takes the hf_xet path.

Faults (per file name): `cut_once` sends half the file and drops the connection, once;
`corrupt` flips a byte (right size, wrong hash); `short` sends fewer bytes than the metadata says
(a self-consistent response of the wrong size); `hold(*names)` makes file GETs wait until `release()`.
Every request is recorded in `requests` as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".model", ".pt", ".pth")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    files: dict[str, bytes]
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            listing = "".join(f"{n}\0{self.etag(n)}\n" for n in sorted(self.files))
            self.commit = hashlib.sha1(listing.encode()).hexdigest()

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(name) else git_blob_sha1(data)


def repo_from_cache(hub_cache: Path, repo: str) -> HubRepo:
    """The files of a repo in a hub-cache-layout folder (e.g. a tiny model), as the hub holds them."""
    folder = Path(hub_cache) / ("models--" + repo.replace("/", "--"))
    rev = (folder / "refs" / "main").read_text().strip()
    snapshot = folder / "snapshots" / rev
    files = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in sorted(snapshot.rglob("*")) if p.is_file()}
    return HubRepo(files=files)


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    short: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._held: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------
    def hold(self, *names: str) -> None:
        """GETs of these files (all files if none are named) wait, headers unsent, until release()."""
        self._held = set(names)
        self._open.clear()

    def _waits(self, name: str) -> bool:
        return not self._held or name in self._held

    def release(self) -> None:
        self._open.set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def file_gets(self, name: str | None = None) -> list[tuple[str, str, str | None]]:
        gets = [r for r in self.requests if r[0] == "GET" and "/resolve/" in r[1]]
        return [r for r in gets if name is None or r[1].endswith("/" + name)]

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client that went away: expected here
        pass


_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _repo(self, name: str, rev: str) -> HubRepo | None:
        repo = self.hub.repos.get(name)
        if repo is None:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return None
        if rev not in ("main", repo.commit):
            self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            return None
        return repo

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        path = unquote(urlparse(self.path).path)
        self.hub.requests.append((self.command, path, self.headers.get("Range")))
        if m := _INFO.match(path):
            repo = self._repo(m["repo"], m["rev"])
            if repo is not None:
                self._json(200, _model_info(m["repo"], repo))
            return
        if m := _RESOLVE.match(path):
            repo = self._repo(m["repo"], m["rev"])
            if repo is None:
                return
            if m["path"] not in repo.files:
                self._json(
                    404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}
                )
                return
            self._file(repo, m["path"], head)
            return
        self._json(404, {"error": "not found"})

    def _file(self, repo: HubRepo, name: str, head: bool) -> None:
        data = repo.files[name]
        size = len(data)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(name)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(name):
            headers |= {"X-Linked-Etag": f'"{repo.etag(name)}"', "X-Linked-Size": str(size)}
        if head:
            self._send(200, headers | {"Content-Length": str(size)}, b"")
            return
        if self.hub._waits(name):
            self.hub._open.wait()
        if name in self.hub.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if name in self.hub.short:
            data = data[: max(0, size - 7)]
        start = 0
        if rng := re.match(r"bytes=(\d+)-$", self.headers.get("Range") or ""):
            start = int(rng[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        status = 206 if start else 200
        if name in self.hub.cut_once and not start:
            self.hub.cut_once.discard(name)
            self._send(status, headers | {"Content-Length": str(len(body))}, body[: len(body) // 2], cut=True)
            return
        self._send(status, headers | {"Content-Length": str(len(body))}, body)

    def _send(self, status: int, headers: dict[str, str], body: bytes, cut: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if cut:  # the connection drops mid-file
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


def _model_info(repo_id: str, repo: HubRepo) -> dict:
    siblings = []
    for name in sorted(repo.files):
        data = repo.files[name]
        entry: dict = {"rfilename": name, "size": len(data)}
        if repo.is_lfs(name):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{repo.etag(name)}\nsize {len(data)}\n"
            entry["blobId"] = git_blob_sha1(pointer.encode())
            entry["lfs"] = {"size": len(data), "sha256": repo.etag(name), "pointerSize": len(pointer)}
        else:
            entry["blobId"] = repo.etag(name)
        siblings.append(entry)
    return {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False, "siblings": siblings}
