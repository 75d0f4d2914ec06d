"""A small Hugging Face Hub-compatible HTTP server for offline tests (the endpoints `huggingface_hub` 2.x calls).

Storage is in memory: per repository, its branches and commits; a commit is a full snapshot `{path: bytes}`, so a
failed commit changes nothing (as on the Hub). Every file is answered `uploadMode: "regular"` at preupload, so
uploads travel base64-encoded inside the commit's NDJSON body (no LFS/Xet transfer).

Endpoints: `GET /api/whoami-v2`; `POST /api/validate-yaml`; `POST /api/repos/create`; `GET /api/{type}s/{repo}[/revision/{rev}]`;
`POST /api/{type}s/{repo}/preupload/{rev}`; `POST /api/{type}s/{repo}/commit/{rev}`;
`POST /api/{type}s/{repo}/branch/{branch}`; `GET /api/{type}s/{repo}/refs`; `GET /api/{type}s/{repo}/commits/{rev}`;
`GET /api/{type}s/{repo}/tree/{rev}[/{path}]`; `POST /api/{type}s/{repo}/paths-info/{rev}`;
`HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}` (ETag, X-Repo-Commit, Content-Length, Range).

Failures are injected with :meth:`FakeHub.fail_next`. Requests that match no endpoint are answered 404 and recorded
in :attr:`FakeHub.unhandled`.

Run it on its own with `python tests/helpers/hub_server.py [port]`.
"""

import base64
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlparse

USER = "tester"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    title: str
    files: Dict[str, bytes]
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


class FakeHub:
    """In-memory Hub storage plus the HTTP server that serves it (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: Dict[Tuple[str, str], Repo] = {}
        self.lock = threading.Lock()
        self.failures: Dict[str, List[int]] = {}
        self.unhandled: List[str] = []
        self.requests: List[str] = []
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread: Optional[threading.Thread] = None

    # ---- life cycle -------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- test controls and inspection --------------------------------------------------------------------------
    def fail_next(self, endpoint: str, times: int = 1, status: int = 500) -> None:
        """Answer the next `times` requests to `endpoint` ("commit", "preupload", "resolve") with `status`
        (huggingface_hub retries 408/429/500/502/503/504 with back-off; other codes fail at once)."""
        with self.lock:
            self.failures.setdefault(endpoint, []).extend([status] * times)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> Dict[str, bytes]:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return dict(commit.files) if commit else {}

    def commit_count(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> int:
        return len(self.repo(repo_id, repo_type).history(revision))

    # ---- storage operations (called with the lock held) -------------------------------------------------------
    def _should_fail(self, endpoint: str) -> Optional[int]:
        """The status to fail this request with, if a failure is pending for `endpoint`."""
        pending = self.failures.get(endpoint)
        return pending.pop(0) if pending else None

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Optional[Repo]:
        key = (repo_type, repo_id)
        if key in self.repos:
            return None
        repo = Repo(repo_type, repo_id, private)
        initial = Commit(oid=hashlib.sha1(f"init {repo_type} {repo_id}".encode()).hexdigest(), parent=None,
                         title="initial commit", files={})
        repo.commits[initial.oid] = initial
        repo.branches["main"] = initial.oid
        self.repos[key] = repo
        return repo

    def commit(self, repo: Repo, branch: str, lines: List[dict]) -> Commit:
        head = repo.resolve(branch)
        files = dict(head.files)
        header = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                raise ValueError(f"unsupported commit operation {key!r} (only regular uploads are served)")
        digest = hashlib.sha1(head.oid.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        digest.update(str(time.time_ns()).encode())
        commit = Commit(oid=digest.hexdigest(), parent=head.oid, title=header.get("summary", ""), files=files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


def _tree_entries(files: Dict[str, bytes], prefix: str, recursive: bool) -> List[dict]:
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
            data = files[path]
            entries.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path})
    return entries


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    # ---- responses --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, code: Optional[str] = None, head: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ---- routing ----------------------------------------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body() if method == "POST" else b""
        self.hub.requests.append(f"{method} {path}")
        try:
            if self._dispatch(method, path, query, body) is False:
                self.hub.unhandled.append(f"{method} {self.path}")
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
        with hub.lock:
            status = hub._should_fail(endpoint) if endpoint in ("preupload", "commit") else None
            if status:
                return self._error(status, f"Injected failure of {endpoint}")
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
                files = json.loads(body)["files"]
                return self._json(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": git_blob_sha1(commit.files[f["path"]]) if f["path"] in commit.files else None}
                    for f in files
                ], "commitOid": commit.oid})
            if method == "POST" and endpoint == "commit":
                branch = unquote(tail)
                if branch not in repo.branches:
                    return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                parent = next((ln["value"].get("parentCommit") for ln in lines if ln["key"] == "header"), None)
                if parent and parent != repo.branches[branch]:
                    return self._error(412, "A commit has happened since the parent commit")
                commit = hub.commit(repo, branch, lines)
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                return self._json(200, {"commitUrl": f"{hub.endpoint}/{prefix}{repo_id}/commit/{commit.oid}",
                                        "commitOid": commit.oid, "pullRequestUrl": None})
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
                        data = commit.files[p]
                        out.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": p})
                    elif any(f.startswith(p + "/") for f in commit.files) or p == "":
                        out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
                return self._json(200, out)
        return False

    def _info(self, repo: Repo, commit: Commit) -> dict:
        return {
            "id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(commit.files.items())],
        }

    def _resolve(self, method, repo_type, repo_id, revision, filename):
        hub, head = self.hub, method == "HEAD"
        with hub.lock:
            status = hub._should_fail("resolve")
            if status:
                return self._error(status, "Injected failure of resolve", head=head)
            repo = self._repo(repo_type, repo_id, head=head)
            if repo is None:
                return None
            commit = self._commit(repo, revision, head=head)
            if commit is None:
                return None
            data = commit.files.get(filename)
        if data is None:
            return self._error(404, f"Entry not found: {filename}", "EntryNotFound", head=head)
        headers = {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
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


def main(argv: List[str]) -> None:
    hub = FakeHub(port=int(argv[0]) if argv else 0)
    print(hub.endpoint, flush=True)
    hub.server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
