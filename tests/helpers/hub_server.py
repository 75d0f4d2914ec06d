"""A small Hugging Face Hub-compatible HTTP server for offline tests (the endpoints `huggingface_hub` 2.x calls).

Storage is in memory: per repository, its branches and commits; a commit is a full snapshot (regular files by
content, LFS files by pointer), so a failed commit changes nothing (as on the Hub).

Upload modes (`FakeHub(transfer=...)`):

* `"regular"` (default): preupload answers every file `uploadMode: "regular"`, so uploads travel base64-encoded
  inside the commit's NDJSON body; no LFS or Xet endpoint is served.
* `"lfs"`: a new repository starts with the Hub's default `.gitattributes`; preupload answers `"lfs"` for a file the
  Hub stores in LFS (a path matching a `filter=lfs` pattern of the branch's `.gitattributes`, a binary sample, i.e.
  a NUL byte or invalid UTF-8, or more than 10 MiB) and the commit refuses such a file sent inline (400). The LFS
  batch API answers the `basic` transfer with a signed upload href on the storage server and a verify href; the PUT
  checks the signature, size and sha256 (400 on a mismatch); a commit's `lfsFile` must name an uploaded object of
  that size (422, the whole commit refused). Downloads of an LFS file redirect (302) to the storage server with
  `X-Linked-Etag` (the sha256), `X-Linked-Size` and `X-Repo-Commit`; tree and paths-info list it with
  `lfs: {oid, size, pointerSize}` and the git oid of its pointer. Xet is not offered: `xet-write-token` is 404,
  as on an LFS-only server.
* `"xet"`: everything of `"lfs"`, plus `xet-write-token` (JSON `{casUrl, accessToken, exp}` and the
  `X-Xet-Cas-Url`/`X-Xet-Access-Token`/`X-Xet-Token-Expiration` headers) pointing at a CAS service on the storage
  server that takes what `hf_xet` sends (bearer token checked): `POST /v1/xorbs/default/{hash}` (stored as received),
  `POST /v1/shards` (parsed: each file's Xet hash, size and sha256 are registered), `GET /v1/chunks/...` (global
  dedup: always 404, nothing is shared). A commit's `lfsFile` may then name a file whose sha256 a shard registered.
  File content is NOT reconstructed from xorbs: downloading an Xet-uploaded file is answered 501 with a message
  saying so (and `FakeHub.files` gives its :class:`LfsPointer`), and `/v1/reconstructions` is not served.

Hub endpoints: `GET /api/whoami-v2`; `POST /api/validate-yaml`; `POST /api/repos/create`;
`GET /api/{type}s/{repo}[/revision/{rev}]`; `POST /api/{type}s/{repo}/preupload/{rev}`;
`POST /api/{type}s/{repo}/commit/{rev}`; `POST /api/{type}s/{repo}/branch/{branch}`; `GET /api/{type}s/{repo}/refs`;
`GET /api/{type}s/{repo}/commits/{rev}`; `GET /api/{type}s/{repo}/tree/{rev}[/{path}]`;
`POST /api/{type}s/{repo}/paths-info/{rev}`; `GET /api/{type}s/{repo}/xet-write-token/{rev}`;
`POST /[{type}s/]{repo}.git/info/lfs/objects/batch` (+ `.../lfs/verify`);
`HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}` (ETag, X-Repo-Commit, Content-Length, Range; LFS: 302 as above).
Storage server (:attr:`FakeHub.storage_endpoint`, another port, so another origin like the Hub's S3/CDN and CAS):
`PUT /lfs/{oid}?size=&sig=`; `GET /lfs/{oid}`; `POST /cas/v1/xorbs/default/{hash}`; `POST /cas/v1/shards`;
`GET /cas/v1/chunks/{prefix}/{hash}` (404); `POST /cas/v1/xorb-grants/...` and `POST /cas/v2/shards` (404: these
newer routes are not offered, so hf_xet falls back to the two above); `POST [/cas]/v1/telemetry` (200, ignored).
Xorb hashes are not verified (that needs BLAKE3) and xorbs are not decompressed (LZ4).

Failures are injected with :meth:`FakeHub.fail_next` (an HTTP status, `"drop"`: close the connection without an
answer, or `"apply-then-drop"`: do the work, then close without an answer). Requests that match no endpoint are
answered 404 and recorded in :attr:`FakeHub.unhandled`.

Run it on its own with `python tests/helpers/hub_server.py [port] [regular|lfs|xet]`.
"""

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, quote, unquote, urlparse

USER = "tester"
TRANSFERS = ("regular", "lfs", "xet")
DROP = "drop"  # fail_next status: close the connection without answering (the request is not processed)
APPLY_THEN_DROP = "apply-then-drop"  # fail_next status: process the request, then close without answering
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores larger files in LFS whatever their type
# The Hub's default .gitattributes of a new repository (the LFS part that matters here).
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
    "*.xz", "*.zip", "*.zst", "*tfevents*"))


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class LfsPointer:
    """A file stored in LFS (its content in :attr:`FakeHub.lfs_objects`) or Xet (`xet_hash` set, content not kept)."""

    sha256: str
    size: int
    xet_hash: Optional[str] = None

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer file the repository's git tree holds in place of the content."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


Blob = Union[bytes, LfsPointer]


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    title: str
    files: Dict[str, Blob]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: Dict[str, str] = field(default_factory=dict)
    commits: Dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Optional[Commit]:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)

    def history(self, revision: str) -> List[Commit]:
        commit, out = self.resolve(revision), []
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out


@dataclass
class XetFile:
    """A file a CAS shard registered: its Xet (merkle) hash, size and sha256."""

    xet_hash: str
    size: int
    sha256: Optional[str]


class CommitRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _gitattributes_lfs(content: str, path: str) -> bool:
    """Whether `path` matches a `filter=lfs` line of a .gitattributes (git's pattern rules, simplified)."""
    for line in content.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith("#") or "filter=lfs" not in parts[1:]:
            continue
        pattern = parts[0].lstrip("/")
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("**/", "")):
                return True
        elif fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern):
            return True
    return False


def _is_binary(sample: bytes) -> bool:
    """A NUL byte or bytes that are not UTF-8 (a multi-byte character cut at the sample's end aside)."""
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        return not (e.reason == "unexpected end of data" and e.start >= len(sample) - 3)
    return False


def parse_shard(data: bytes) -> List[XetFile]:
    """The files a Xet MDB shard describes (its file-info section: per file a header, its segments, optional
    verification entries and an optional metadata extension carrying the sha256); raises ValueError if malformed."""
    header = 48  # 32-byte tag, u64 version, u64 footer size
    if len(data) < header + 48:
        raise ValueError("shard too short")
    offset, files = header, []
    while True:
        if offset + 48 > len(data):
            raise ValueError("shard file section not terminated")
        file_hash, flags, entries = data[offset:offset + 32], *struct.unpack_from("<II", data, offset + 32)
        offset += 48
        if file_hash == b"\xff" * 32:  # bookend
            return files
        size = 0
        for i in range(entries):
            size += struct.unpack_from("<I", data, offset + 36)[0]  # unpacked segment bytes
            offset += 48
        if flags & (1 << 31):  # verification entries, one per segment
            offset += 48 * entries
        sha256 = None
        if flags & (1 << 30):  # metadata extension: the sha256 of the file
            sha256 = _xet_hex(data[offset:offset + 32])  # stored as a Xet hash: same word order
            offset += 48
        files.append(XetFile(xet_hash=_xet_hex(file_hash), size=size, sha256=sha256))


def _xet_hex(raw: bytes) -> str:
    """A Xet hash as the Hub and hf_xet print it (four little-endian u64 words, each as 16 hex digits)."""
    return "".join(f"{w:016x}" for w in struct.unpack("<4Q", raw))


class FakeHub:
    """In-memory Hub storage plus the HTTP servers that serve it (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, transfer: str = "regular"):
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
        self.transfer = transfer
        self.tokens = {"hf_test_token"}  # any other Bearer token on /api/ is answered 401, as the Hub does
        self.repos: Dict[Tuple[str, str], Repo] = {}
        self.lock = threading.Lock()
        self.failures: Dict[str, List[Union[int, str]]] = {}
        self.unhandled: List[str] = []
        self.requests: List[str] = []
        self.lfs_objects: Dict[str, bytes] = {}  # sha256 -> content, uploaded through the LFS basic transfer
        self.xorbs: Dict[str, bytes] = {}  # xorb hash -> the serialized xorb as received
        self.shards: List[bytes] = []
        self.xet_files: Dict[str, XetFile] = {}  # sha256 -> file registered by a shard
        self.xet_tokens: List[str] = []
        self._secret = secrets.token_bytes(16)
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.storage = ThreadingHTTPServer((host, 0), Handler)  # S3/CDN and CAS stand-in: another origin
        self.storage.daemon_threads = True
        self.threads: List[threading.Thread] = []

    # ---- life cycle -------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def storage_endpoint(self) -> str:
        host, port = self.storage.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        for server in (self.server, self.storage):
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self.server, self.storage):
            server.shutdown()
            server.server_close()

    # ---- test controls and inspection --------------------------------------------------------------------------
    def fail_next(self, endpoint: str, times: int = 1, status: Union[int, str] = 500) -> None:
        """Answer the next `times` requests to `endpoint` with `status`, or drop them (see the module docstring).

        Endpoints: "preupload", "commit", "resolve" (Hub API); "lfs-batch", "lfs-upload" (the PUT), "lfs-verify",
        "lfs-download" (LFS); "xet-write-token", "xet-xorb", "xet-shard" (Xet). huggingface_hub retries
        408/429/500/502/503/504 and dropped connections with back-off where it uses `http_backoff` (not on the
        commit); other codes fail at once."""
        if not (isinstance(status, int) or status in (DROP, APPLY_THEN_DROP)):
            raise ValueError(f"status must be an HTTP status, {DROP!r} or {APPLY_THEN_DROP!r}")
        with self.lock:
            self.failures.setdefault(endpoint, []).extend([status] * times)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> Dict[str, Blob]:
        """Path -> content; an LFS file's content from the LFS store; an Xet file's :class:`LfsPointer` (its
        content is not reconstructed)."""
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return {p: self._content(b) for p, b in commit.files.items()} if commit else {}

    def lfs_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> Dict[str, LfsPointer]:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return {p: b for p, b in commit.files.items() if isinstance(b, LfsPointer)} if commit else {}

    def commit_count(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> int:
        return len(self.repo(repo_id, repo_type).history(revision))

    def _content(self, blob: Blob) -> Blob:
        if isinstance(blob, LfsPointer) and blob.sha256 in self.lfs_objects:
            return self.lfs_objects[blob.sha256]
        return blob

    # ---- storage operations (called with the lock held) -------------------------------------------------------
    def _should_fail(self, endpoint: str) -> Optional[Union[int, str]]:
        """The status to fail this request with, if a failure is pending for `endpoint`."""
        pending = self.failures.get(endpoint)
        return pending.pop(0) if pending else None

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Optional[Repo]:
        key = (repo_type, repo_id)
        if key in self.repos:
            return None
        repo = Repo(repo_type, repo_id, private)
        files: Dict[str, Blob] = {} if self.transfer == "regular" else {".gitattributes": DEFAULT_GITATTRIBUTES.encode()}
        initial = Commit(oid=hashlib.sha1(f"init {repo_type} {repo_id}".encode()).hexdigest(), parent=None,
                         title="initial commit", files=files)
        repo.commits[initial.oid] = initial
        repo.branches["main"] = initial.oid
        self.repos[key] = repo
        return repo

    def upload_mode(self, head: Commit, path: str, size: int, sample: bytes) -> str:
        """Where the Hub stores this file: "lfs" or "regular" (see the module docstring)."""
        if self.transfer == "regular":
            return "regular"
        attributes = head.files.get(".gitattributes")
        if isinstance(attributes, bytes) and _gitattributes_lfs(attributes.decode("utf-8", "replace"), path):
            return "lfs"
        return "lfs" if size > LFS_THRESHOLD or _is_binary(sample) else "regular"

    def lfs_pointer(self, oid: str, size: Optional[int]) -> Optional[LfsPointer]:
        """The LFS/Xet object a commit may reference, if it was uploaded (with that size)."""
        if oid in self.lfs_objects and (size is None or len(self.lfs_objects[oid]) == size):
            return LfsPointer(oid, len(self.lfs_objects[oid]))
        xet = self.xet_files.get(oid) if self.transfer == "xet" else None
        if xet is not None and (size is None or xet.size == size):
            return LfsPointer(oid, xet.size, xet.xet_hash)
        return None

    def commit(self, repo: Repo, branch: str, lines: List[dict]) -> Commit:
        """Apply a commit's NDJSON lines on top of `branch`; raises CommitRejected (nothing changed) if one is bad."""
        head = repo.resolve(branch)
        files = dict(head.files)
        header = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value["content"])
                if self.upload_mode(head, value["path"], len(data), data[:512]) == "lfs":
                    raise CommitRejected(400, f"Your push was rejected because it contains binary files: "
                                              f"{value['path']} must be uploaded to LFS/Xet storage")
                files[value["path"]] = data
            elif key == "lfsFile":
                if self.transfer == "regular":
                    raise CommitRejected(400, f"LFS is not enabled on this server ({value.get('path')})")
                if value.get("algo", "sha256") != "sha256":
                    raise CommitRejected(400, f"unsupported LFS hash algorithm {value.get('algo')!r}")
                pointer = self.lfs_pointer(value["oid"], value.get("size"))
                if pointer is None:
                    raise CommitRejected(422, f"Your push was rejected because an LFS pointer points to a file that "
                                              f"does not exist: {value['path']} (sha256 {value['oid']})")
                files[value["path"]] = pointer
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                raise CommitRejected(400, f"unsupported commit operation {key!r}")
        digest = hashlib.sha1(head.oid.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + _git_oid(files[path]).encode())
        digest.update(str(time.time_ns()).encode())
        commit = Commit(oid=digest.hexdigest(), parent=head.oid, title=header.get("summary", ""), files=files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def lfs_signature(self, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()


def _git_oid(blob: Blob) -> str:
    """The git object id of what the tree holds: the content, or the LFS pointer file."""
    return git_blob_sha1(blob.pointer if isinstance(blob, LfsPointer) else blob)


def _size(blob: Blob) -> int:
    return blob.size if isinstance(blob, LfsPointer) else len(blob)


def _file_entry(path: str, blob: Blob) -> dict:
    entry = {"type": "file", "oid": _git_oid(blob), "size": _size(blob), "path": path}
    if isinstance(blob, LfsPointer):
        entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        if blob.xet_hash:
            entry["xetHash"] = blob.xet_hash
    return entry


def _tree_entries(files: Dict[str, Blob], prefix: str, recursive: bool) -> List[dict]:
    prefix = prefix.strip("/")
    base = prefix + "/" if prefix else ""
    entries, folders = [], set()
    for path in sorted(files):
        if not path.startswith(base):
            continue
        rest = path[len(base):]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folder = base + "/".join(parts[:depth])
            if (recursive or depth == 1) and folder not in folders:
                folders.add(folder)
                entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder})
        if recursive or len(parts) == 1:
            entries.append(_file_entry(path, files[path]))
    return entries


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    _mute = False  # set by an "apply-then-drop" failure: the answer is not sent

    def log_message(self, format, *args):  # quiet
        pass

    # ---- responses --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None,
              content_type: str = "application/json", head: bool = False) -> None:
        if self._mute:
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: Optional[Dict[str, str]] = None,
              content_type: str = "application/json") -> None:
        self._send(status, json.dumps(obj).encode(), headers, content_type)

    def _error(self, status: int, message: str, code: Optional[str] = None, head: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _inject(self, endpoint: str, head: bool = False) -> bool:
        """Apply a pending failure of `endpoint`: True if the request was answered (or dropped) by it."""
        with self.hub.lock:
            status = self.hub._should_fail(endpoint)
        if status is None:
            return False
        if status == APPLY_THEN_DROP:
            self._mute = True
            return False
        if status == DROP:
            self.close_connection = True
            return True
        self._error(status, f"Injected failure of {endpoint}", head=head)
        return True

    # ---- routing ----------------------------------------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body() if method in ("POST", "PUT") else b""
        storage = self.server is self.hub.storage
        self.hub.requests.append(f"{method} {'storage:' if storage else ''}{path}")
        auth = self.headers.get("Authorization") or ""
        if not storage and path.startswith("/api/"):
            if auth.startswith("Bearer ") and auth[len("Bearer "):] not in self.hub.tokens:
                return self._error(401, "Invalid credentials in Authorization header")
            if path == "/api/whoami-v2" and not auth:
                return self._error(401, "Invalid credentials in Authorization header")
        try:
            dispatch = self._dispatch_storage if storage else self._dispatch
            if dispatch(method, path, query, body) is False:
                self.hub.unhandled.append(f"{method} {'storage:' if storage else ''}{self.path}")
                self._error(404, f"no such endpoint: {method} {path}")
        except Exception as e:  # a bug in the fake server must show up in the test, not hang the client
            self.hub.unhandled.append(f"{method} {self.path}: {type(e).__name__}: {e}")
            self._error(500, f"fake hub error: {type(e).__name__}: {e}")

    def _repo(self, repo_type: str, repo_id: str, head: bool = False) -> Optional[Repo]:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound", head=head)
        return repo

    def _commit(self, repo: Repo, revision: str, head: bool = False) -> Optional[Commit]:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", head=head)
        return commit

    def _authorized(self) -> bool:
        """The Hub's write endpoints need a token; answer 401 without one."""
        if (self.headers.get("Authorization") or "").startswith("Bearer "):
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _dispatch(self, method: str, path: str, query: Dict[str, List[str]], body: bytes):
        hub = self.hub
        if path == "/api/whoami-v2" and method == "GET":
            return self._json(200, {"type": "user", "name": USER, "fullname": "Test User", "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if path == "/api/agent-harnesses" and method == "GET":  # the client's user-agent telemetry registry
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if path == "/api/validate-yaml" and method == "POST":  # the README's metadata, checked before a commit
            return self._validate_yaml(json.loads(body or b"{}").get("content", ""))
        if path == "/api/repos/create" and method == "POST":
            payload = json.loads(body or b"{}")
            repo_type = payload.get("type") or "model"
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            with hub.lock:
                created = hub.create_repo(repo_type, repo_id, bool(payload.get("private"))
                                          or payload.get("visibility") in ("private", "protected"))
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            answer = {"url": f"{hub.endpoint}/{prefix}{repo_id}", "name": repo_id}
            if created is None:
                answer["error"] = "You already created this repo"
                return self._json(409, answer, {"X-Error-Message": answer["error"]})
            return self._json(200, answer)

        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?", path)
        if m:
            return self._api(method, m.group(1)[:-1], m.group(2), m.group(3) or "", query, body)

        m = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/(objects/batch|verify)", path)
        if m and method == "POST":
            repo_type = (m.group(1) or "models")[:-1]
            if m.group(3) == "verify":
                return self._lfs_verify(repo_type, m.group(2), body)
            return self._lfs_batch(repo_type, m.group(2), body)

        m = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            return self._resolve(method, (m.group(1) or "models")[:-1], m.group(2), unquote(m.group(3)),
                                 unquote(m.group(4)))
        return False

    def _validate_yaml(self, content: str):
        import yaml

        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, flags=re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            return self._error(400, f"Invalid YAML metadata: {e}")
        if metadata is not None and not isinstance(metadata, dict):
            return self._error(400, "The YAML metadata must be a mapping")
        warnings = [] if metadata else [{"message": "empty or missing yaml metadata in repo card"}]
        return self._json(200, {"errors": [], "warnings": warnings})

    def _api(self, method, repo_type, repo_id, rest, query, body):
        hub = self.hub
        endpoint, _, tail = rest.partition("/")
        if endpoint in ("preupload", "commit", "xet-write-token") and self._inject(endpoint):
            return None
        with hub.lock:
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return None
            if method == "GET" and endpoint in ("", "revision"):
                commit = self._commit(repo, unquote(tail) if endpoint else "main")
                if commit is None:
                    return None
                return self._json(200, self._info(repo, commit))
            if method == "POST" and endpoint == "preupload":
                commit = self._commit(repo, unquote(tail))
                if commit is None:
                    return None
                out = []
                for f in json.loads(body)["files"]:
                    mode = hub.upload_mode(commit, f["path"], int(f["size"]), base64.b64decode(f.get("sample", "")))
                    existing = commit.files.get(f["path"])
                    oid = None if existing is None else (
                        existing.sha256 if isinstance(existing, LfsPointer) else git_blob_sha1(existing))
                    out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
                return self._json(200, {"files": out, "commitOid": commit.oid})
            if method == "POST" and endpoint == "commit":
                if not self._authorized():
                    return None
                branch = unquote(tail)
                if branch not in repo.branches:
                    return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                parent = next((ln["value"].get("parentCommit") for ln in lines if ln["key"] == "header"), None)
                if parent and parent != repo.branches[branch]:
                    return self._error(412, "A commit has happened since the parent commit")
                try:
                    commit = hub.commit(repo, branch, lines)
                except CommitRejected as e:
                    return self._error(e.status, str(e))
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                return self._json(200, {"commitUrl": f"{hub.endpoint}/{prefix}{repo_id}/commit/{commit.oid}",
                                        "commitOid": commit.oid, "pullRequestUrl": None})
            if method == "GET" and endpoint == "xet-write-token":
                if hub.transfer != "xet":
                    return self._error(404, "Xet storage is not enabled on this server")
                if not self._authorized():
                    return None
                if repo.resolve(unquote(tail)) is None and unquote(tail) != "None":
                    return self._error(404, f"Invalid rev id: {tail}", "RevisionNotFound")
                token, exp = secrets.token_hex(16), int(time.time()) + 3600
                hub.xet_tokens.append(token)
                cas = f"{hub.storage_endpoint}/cas"
                return self._json(200, {"casUrl": cas, "accessToken": token, "exp": exp},
                                  {"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token,
                                   "X-Xet-Token-Expiration": str(exp)})
            if method == "POST" and endpoint == "branch":
                branch = unquote(tail)
                if branch in repo.branches:
                    return self._error(409, f"Reference already exists: {branch}")
                start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
                commit = self._commit(repo, start)
                if commit is None:
                    return None
                repo.branches[branch] = commit.oid
                return self._json(200, {})
            if method == "GET" and endpoint == "refs":
                return self._json(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                                                     for b, c in repo.branches.items()],
                                        "tags": [], "converts": []})
            if method == "GET" and endpoint == "commits":
                if repo.resolve(unquote(tail)) is None:
                    return self._error(404, f"Invalid rev id: {tail}", "RevisionNotFound")
                return self._json(200, [
                    {"id": c.oid, "title": c.title, "message": c.title, "authors": [{"user": USER}],
                     "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(c.date))}
                    for c in repo.history(unquote(tail))
                ])
            if method == "GET" and endpoint == "tree":
                revision, _, folder = tail.partition("/")
                commit = self._commit(repo, unquote(revision))
                if commit is None:
                    return None
                folder = unquote(folder)
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                entries = _tree_entries(commit.files, folder, recursive)
                if folder and not entries and folder not in commit.files:
                    return self._error(404, f"{folder} does not exist", "EntryNotFound")
                return self._json(200, entries)
            if method == "POST" and endpoint == "paths-info":
                commit = self._commit(repo, unquote(tail))
                if commit is None:
                    return None
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    paths = json.loads(body).get("paths", [])
                else:
                    paths = parse_qs(body.decode()).get("paths", [])
                out = []
                for p in paths:
                    p = p.strip("/")
                    if p in commit.files:
                        out.append(_file_entry(p, commit.files[p]))
                    elif any(f.startswith(p + "/") for f in commit.files) or p == "":
                        out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
                return self._json(200, out)
        return False

    def _info(self, repo: Repo, commit: Commit) -> dict:
        return {
            "id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            "siblings": [{"rfilename": p, "size": _size(d)} for p, d in sorted(commit.files.items())],
        }

    # ---- LFS (git-lfs batch API, basic transfer) ----------------------------------------------------------------
    def _lfs_error(self, status: int, message: str) -> None:
        self._json(status, {"message": message}, {"X-Error-Message": message}, "application/vnd.git-lfs+json")

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes):
        hub = self.hub
        if self._inject("lfs-batch"):
            return None
        if hub.transfer == "regular":
            return self._lfs_error(404, "LFS is not enabled on this server")
        if "application/vnd.git-lfs+json" not in (self.headers.get("Accept") or ""):
            return self._lfs_error(406, "Accept: application/vnd.git-lfs+json is required")
        if not self._authorized():
            return None
        try:
            request = json.loads(body)
        except ValueError:
            return self._lfs_error(422, "the batch request is not JSON")
        operation, transfers = request.get("operation"), request.get("transfers") or ["basic"]
        if operation not in ("upload", "download") or not isinstance(request.get("objects"), list):
            return self._lfs_error(422, "operation must be upload or download, with a list of objects")
        if request.get("hash_algo", "sha256") != "sha256":
            return self._lfs_error(409, f"unsupported hash algorithm {request.get('hash_algo')!r}")
        if "basic" not in transfers:
            return self._lfs_error(422, f"no supported transfer among {transfers} (only basic)")
        with hub.lock:
            if self._repo(repo_type, repo_id) is None:
                return None
            objects = []
            for obj in request["objects"]:
                oid, size = obj.get("oid"), obj.get("size")
                if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid)) or not isinstance(size, int) \
                        or size < 0:
                    objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                    "error": {"code": 422, "message": "invalid oid or size"}})
                    continue
                entry = {"oid": oid, "size": size, "authenticated": True}
                stored = hub.lfs_objects.get(oid)
                if operation == "download":
                    if stored is None:
                        entry["error"] = {"code": 404, "message": "Object does not exist"}
                    else:
                        entry["actions"] = {"download": {"href": f"{hub.storage_endpoint}/lfs/{oid}",
                                                         "expires_in": 3600}}
                elif stored is None or len(stored) != size:  # present objects get no action
                    prefix = "" if repo_type == "model" else f"{repo_type}s/"
                    sig = hub.lfs_signature(oid, size)
                    entry["actions"] = {
                        "upload": {"href": f"{hub.storage_endpoint}/lfs/{oid}?size={size}&sig={sig}",
                                   "expires_in": 3600},
                        "verify": {"href": f"{hub.endpoint}/{prefix}{repo_id}.git/info/lfs/verify",
                                   "header": {"Authorization": self.headers.get("Authorization", "")},
                                   "expires_in": 3600},
                    }
                objects.append(entry)
        return self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                          content_type="application/vnd.git-lfs+json")

    def _lfs_verify(self, repo_type: str, repo_id: str, body: bytes):
        hub = self.hub
        if self._inject("lfs-verify"):
            return None
        if hub.transfer == "regular":
            return self._lfs_error(404, "LFS is not enabled on this server")
        if not self._authorized():
            return None
        request = json.loads(body or b"{}")
        with hub.lock:
            stored = hub.lfs_objects.get(request.get("oid"))
        if stored is None or len(stored) != request.get("size"):
            return self._lfs_error(404, f"object {request.get('oid')} of size {request.get('size')} was not uploaded")
        return self._json(200, {}, content_type="application/vnd.git-lfs+json")

    # ---- downloads ----------------------------------------------------------------------------------------------
    def _resolve(self, method, repo_type, repo_id, revision, filename):
        hub, head = self.hub, method == "HEAD"
        if self._inject("resolve", head=head):
            return None
        with hub.lock:
            repo = self._repo(repo_type, repo_id, head=head)
            if repo is None:
                return None
            commit = self._commit(repo, revision, head=head)
            if commit is None:
                return None
            blob = commit.files.get(filename)
        if blob is None:
            return self._error(404, f"Entry not found: {filename}", "EntryNotFound", head=head)
        if isinstance(blob, LfsPointer):
            if blob.sha256 not in hub.lfs_objects:
                return self._error(501, f"{filename} was uploaded through Xet storage; this test server does not "
                                        "reconstruct Xet files, so it cannot serve its content", head=head)
            # As the Hub: a redirect to the storage host (another origin), the file's metadata on this answer.
            return self._send(302, b"", {"Location": f"{hub.storage_endpoint}/lfs/{blob.sha256}",
                                         "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size),
                                         "ETag": f'"{_git_oid(blob)}"', "X-Repo-Commit": commit.oid},
                              content_type="text/plain", head=head)
        headers = {"ETag": f'"{git_blob_sha1(blob)}"', "X-Repo-Commit": commit.oid}
        return self._send_content(blob, headers, head)

    def _send_content(self, data: bytes, headers: Dict[str, str], head: bool):
        headers = dict(headers, **{"Accept-Ranges": "bytes"})
        status, chunk = 200, data
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "") or "")
        if match and data:
            start = int(match.group(1)) if match.group(1) else max(len(data) - int(match.group(2)), 0)
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            if start > end:
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head=head)
            status, chunk = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return self._send(status, chunk, headers, content_type="application/octet-stream", head=head)

    # ---- storage server: LFS objects (S3/CDN stand-in) and the Xet CAS ----------------------------------------
    def _dispatch_storage(self, method: str, path: str, query: Dict[str, List[str]], body: bytes):
        hub = self.hub
        m = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        if m and method == "PUT":
            if self._inject("lfs-upload"):
                return None
            oid, size = m.group(1), query.get("size", [""])[0]
            if not size.isdigit() or not hmac.compare_digest(query.get("sig", [""])[0],
                                                             hub.lfs_signature(oid, int(size))):
                return self._error(403, "SignatureDoesNotMatch: the upload URL is not valid for this object")
            if len(body) != int(size):
                return self._error(400, f"BadDigest: received {len(body)} bytes, the batch request announced {size}")
            if hashlib.sha256(body).hexdigest() != oid:
                return self._error(400, "BadDigest: the content's sha256 does not match the object id")
            with hub.lock:
                hub.lfs_objects[oid] = body
            return self._send(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        if m and method in ("GET", "HEAD"):
            if self._inject("lfs-download", head=method == "HEAD"):
                return None
            with hub.lock:
                data = hub.lfs_objects.get(m.group(1))
            if data is None:
                return self._error(404, "NoSuchKey", head=method == "HEAD")
            return self._send_content(data, {"ETag": f'"{m.group(1)}"'}, method == "HEAD")

        if re.fullmatch(r"(/cas)?/v1/telemetry", path) and method == "POST":  # hf_xet's usage reports
            return self._json(200, {})
        if not path.startswith("/cas/"):
            return False
        if hub.transfer != "xet":
            return self._error(404, "Xet storage is not enabled on this server")
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if token not in hub.xet_tokens:
            return self._error(401, "invalid or missing Xet access token")
        route = path[len("/cas"):]
        m = re.fullmatch(r"/v1/xorbs/([^/]+)/([0-9a-f]{64})", route)
        if m and method == "POST":
            if self._inject("xet-xorb"):
                return None
            if not body:
                return self._error(400, "empty xorb")
            with hub.lock:
                inserted = m.group(2) not in hub.xorbs
                hub.xorbs[m.group(2)] = body
            return self._json(200, {"was_inserted": inserted})
        if route == "/v1/shards" and method == "POST":
            if self._inject("xet-shard"):
                return None
            try:
                files = parse_shard(body)
            except (ValueError, struct.error) as e:
                return self._error(400, f"invalid shard: {e}")
            with hub.lock:
                hub.shards.append(body)
                for f in files:
                    if f.sha256:
                        hub.xet_files[f.sha256] = f
            return self._json(200, {"result": 1})
        if re.fullmatch(r"/v1/chunks/[^/]+/[0-9a-f]{64}", route) and method == "GET":
            return self._error(404, "no shard for this chunk (no global dedup here)")
        if (re.fullmatch(r"/v1/xorb-grants/[^/]+/[0-9a-f]{64}", route) or route == "/v2/shards") and method == "POST":
            # newer CAS routes (presigned xorb upload, streamed shard validation): not offered, as by an older CAS;
            # hf_xet then uses /v1/xorbs and /v1/shards
            return self._error(404, f"{route} is not offered by this CAS")
        return False


def main(argv: List[str]) -> None:
    hub = FakeHub(port=int(argv[0]) if argv else 0, transfer=argv[1] if len(argv) > 1 else "regular").start()
    print(hub.endpoint, hub.storage_endpoint, flush=True)
    hub.threads[0].join()


if __name__ == "__main__":
    main(sys.argv[1:])
