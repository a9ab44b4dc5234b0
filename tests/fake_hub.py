"""A Hugging Face Hub stand-in on 127.0.0.1 for the tests: the endpoints huggingface_hub's own client calls to create
a repository, commit files (inline, as the Hub takes small files), branch, tag, read a revision, list a tree and
download a file. Point huggingface_hub at it with ``HF_ENDPOINT``; it keeps every commit in memory."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from loopback import LoopbackServer


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    gated: bool = False

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


class FakeHub(LoopbackServer):
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []  # "METHOD path" of every request, in order
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub._serve(self, "GET")

            def do_HEAD(self) -> None:
                hub._serve(self, "HEAD")

            def do_POST(self) -> None:
                hub._serve(self, "POST")

        super().__init__(Handler)

    # -- the endpoints ---------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(h.path).path
        self.requests.append(f"{method} {path}")
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        with self._lock:
            status, headers, payload = self._route(method, path, body)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(payload)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req.get('organization')}/{req['name']}" if req.get("organization") else req["name"]
            self.repos.setdefault(repo_id, Repo())
            return _json({"url": f"{self.url}/{repo_id}", "name": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return _json({"errors": [], "warnings": []})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree|preupload|commit|branch|tag)/([^/]+)(/.*)?$", path)
        if m:
            repo_id, action, rev, rest = m.group(1), m.group(2), unquote(m.group(3)), (m.group(4) or "").lstrip("/")
            repo = self.repos.get(repo_id)
            if repo is None:
                return _error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            if repo.gated and method == "GET":
                return _error(403, "GatedRepo", f"Access to model {repo_id} is restricted")
            if action == "preupload":
                files = json.loads(body)["files"]
                return _json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                        for f in files]})
            if action == "commit":
                return self._commit(repo_id, repo, rev, body)
            if action == "branch":
                if rev not in repo.refs:
                    repo.refs[rev] = repo.refs.get("main", "")
                return _json({})
            if action == "tag":
                commit = repo.resolve(rev)
                if commit is None:
                    return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                repo.refs[json.loads(body)["tag"]] = commit
                return _json({})
            commit = repo.resolve(rev)
            if commit is None or commit not in repo.commits:
                return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = repo.commits[commit]
            if action == "revision":
                return _json({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                              "siblings": [{"rfilename": p} for p in sorted(files)]})
            prefix = rest + "/" if rest else ""
            return _json([{"type": "file", "oid": _oid(c), "size": len(c), "path": p}
                          for p, c in sorted(files.items()) if p.startswith(prefix)])
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and method in ("GET", "HEAD"):
            repo_id, rev, name = m.group(1), unquote(m.group(2)), unquote(m.group(3))
            repo = self.repos.get(repo_id)
            if repo is None:
                return _error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            commit = repo.resolve(rev)
            if commit is None:
                return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            content = repo.commits[commit].get(name)
            if content is None:
                return _error(404, "EntryNotFound", f"{name} does not exist at {rev}")
            return 200, {"X-Repo-Commit": commit, "ETag": f'"{_oid(content)}"',
                         "Content-Type": "application/octet-stream"}, content
        return _error(404, "", f"no fake Hub endpoint for {method} {path}")

    def _commit(self, repo_id: str, repo: Repo, branch: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parent = repo.refs.get(branch)
        files = dict(repo.commits.get(parent, {})) if parent else {}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        for item in lines:
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        commit = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{sorted(files)}".encode()
                              + b"".join(files[p] for p in sorted(files))).hexdigest()
        repo.commits[commit] = files
        repo.refs[branch] = commit
        return _json({"commitUrl": f"{self.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                      "pullRequestUrl": None})


def _oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _json(obj: object) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return status, headers, json.dumps({"error": message}).encode()
