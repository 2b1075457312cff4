"""A Hugging Face Hub-protocol test server: the endpoints the official ``huggingface_hub`` client (and so
diffusers' and datasets' Hub code) calls, on the standard library only.

It behaves like the real Hub where tests rely on it (see ``/work/shared/reference/hub-protocol.md``):

* repos (models, datasets, spaces) created with ``POST /api/repos/create`` (409 when it exists), an initial
  commit holding ``.gitattributes``; private repos are invisible (404 ``RepoNotFound``) to other users;
* uploads: ``preupload`` (regular or LFS by the repo's ``.gitattributes``, the remote ``oid`` of each path so the
  client skips unchanged files), the LFS batch API (content-addressed: an object the repo already holds gets no
  ``actions``), ``PUT`` of the raw bytes (checked against their sha256), and ``commit`` (ndjson lines ``header``,
  ``file``, ``lfsFile``, ``deletedFile``, ``deletedFolder``); every commit gets a sha and is atomic: it is checked
  completely before any ref moves, so a failed or interrupted commit changes nothing; ``create_pr=1`` opens
  ``refs/pr/N``;
* downloads: ``HEAD``/``GET .../resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` /
  ``X-Linked-Size`` for LFS files, and ``Range``;
* repo info (``siblings``, ``sha``, card data), ``tree`` (a missing folder is 404 ``EntryNotFound``),
  ``paths-info``, ``refs``, branches, tags, ``commits``; ``revision`` may be a branch, a tag, a PR ref or a sha;
* typed errors: ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` plus a JSON
  ``error``; 401 with ``X-Error-Message: Invalid credentials in Authorization header`` for a bad token, and 401
  for a write without one.

Test hooks: :attr:`HubServer.lfs_puts` counts completed LFS uploads; :meth:`HubServer.kill_lfs_uploads` makes the
server read part of each LFS ``PUT`` body and then drop the connection without an answer (an interrupted push);
:attr:`HubServer.requests` logs ``(method, path)`` of every request.

Example:
    >>> server = HubServer(tokens={"hf_test": "tester"}).start()   # doctest: +SKIP
    >>> # HF_ENDPOINT=server.url HF_TOKEN=hf_test HF_HUB_DISABLE_XET=1 python -c "..."
    >>> server.stop()   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS whatever .gitattributes says

# The .gitattributes the Hub writes into every new repo (abridged to the patterns that matter here).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lfs.*",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "*.tar.*",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.wasm",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    )
)
DATASET_GITATTRIBUTES_EXTRA = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.mds", "*.lz4", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.wav", "*.mp3", "*.flac")
)
HARNESS_REGISTRY = {"standardEnvVars": [], "harnesses": {}}


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code (or None) and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """git's object id of a blob: sha1 over ``blob <size>\\0<data>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file in a commit's tree; the bytes live in the content-addressed blob store under ``sha256``."""

    size: int
    sha256: str
    lfs: bool


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, Entry]
    git_oids: dict[str, str]  # path -> git blob oid (regular files: sha1 of the content, as git)


@dataclass
class Repo:
    type: str
    id: str
    owner: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)

    def resolve(self, revision: str) -> str:
        """A branch, tag, ``refs/heads|tags|pr/...`` ref or full commit sha → commit sha (else RevisionNotFound)."""
        rev = revision
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix) and rev[len(prefix) :] in table:
                return table[rev[len(prefix) :]]
        match = re.fullmatch(r"refs/pr/(\d+)", rev)
        if match and int(match[1]) in self.prs:
            return self.prs[int(match[1])]
        if re.fullmatch(r"[0-9a-f]{40}", rev) and rev in self.commits:
            return rev
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubState:
    """Everything the server knows: users' tokens, repos, the blob store, counters and fault switches."""

    def __init__(self, storage: Path, tokens: dict[str, str]):
        self.storage = storage
        self.storage.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.lfs_puts = 0
        self.lfs_put_oids: list[str] = []
        self.kill_puts = 0  # how many further LFS PUTs to cut off midway ...
        self.puts_before_kill = 0  # ... after letting this many through
        self.killed_puts = 0
        self.requests: list[tuple[str, str]] = []
        self.responses: list[tuple[str, str, int]] = []  # (method, path, status) of every answer
        self.errors: list[str] = []  # tracebacks of server bugs (answered with 500)
        self._counter = 0

    # ---------------------------------------------------------------- blobs
    def blob_path(self, sha256: str) -> Path:
        return self.storage / sha256[:2] / sha256

    def store_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{sha}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    # ---------------------------------------------------------------- commits
    def new_sha(self, *parts: str) -> str:
        with self.lock:
            self._counter += 1
            return hashlib.sha1("\0".join((*parts, str(self._counter), repr(time.time()))).encode()).hexdigest()

    def make_commit(
        self,
        repo: Repo,
        parent: str | None,
        title: str,
        message: str,
        author: str,
        tree: dict[str, Entry],
        git_oids: dict[str, str],
    ) -> Commit:
        listing = "\n".join(f"{p} {e.sha256} {e.lfs}" for p, e in sorted(tree.items()))
        sha = self.new_sha(repo.id, parent or "", title, listing)
        commit = Commit(sha, parent, title, message, author, _now(), tree, git_oids)
        repo.commits[sha] = commit
        return commit


def _lfs_patterns(text: str) -> list[str]:
    patterns = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches(path: str, pattern: str) -> bool:
    if "/" in pattern.rstrip("/"):
        return fnmatch.fnmatch(path, pattern.replace("**/", "*"))
    return fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern)


class HubServer:
    """The test server: ``HubServer(tokens={token: user}).start()``; ``url``, ``stop()``, counters, switches."""

    def __init__(self, tokens: dict[str, str], storage: str | Path | None = None, host: str = "127.0.0.1"):
        self._tmp = None
        if storage is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hub-server-")
            storage = self._tmp.name
        self.state = HubState(Path(storage), tokens)
        self.host = host
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None, "server not started"
        return f"http://{self.host}:{self.httpd.server_address[1]}"

    def start(self) -> HubServer:
        state = self.state

        class Handler(_HubHandler):
            hub = state

        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self._tmp is not None:
            self._tmp.cleanup()

    # ---------------------------------------------------------------- test hooks
    @property
    def lfs_puts(self) -> int:
        return self.state.lfs_puts

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.state.requests

    def reset_counters(self) -> None:
        with self.state.lock:
            self.state.lfs_puts = 0
            self.state.lfs_put_oids.clear()
            self.state.requests.clear()
            self.state.kill_puts = 0
            self.state.puts_before_kill = 0
            self.state.killed_puts = 0

    def kill_lfs_uploads(self, count: int = 1_000_000, after: int = 0) -> None:
        """Let ``after`` LFS PUTs through, then cut off the next ``count`` midway: read part of the body and drop
        the socket without an answer (the client's retries are cut off too while ``count`` lasts)."""
        with self.state.lock:
            self.state.kill_puts, self.state.puts_before_kill = count, after

    @property
    def responses(self) -> list[tuple[str, str, int]]:
        return self.state.responses

    @property
    def errors(self) -> list[str]:
        return self.state.errors

    @property
    def killed_puts(self) -> int:
        return self.state.killed_puts

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha ``revision`` points to (for assertions)."""
        with self.state.lock:
            return self.state.repos[(repo_type, repo_id)].resolve(revision)


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubTestServer/1.0"
    hub: HubState

    def log_message(self, format, *args):
        pass

    def log_request(self, code="-", size="-"):
        with self.hub.lock:
            self.hub.responses.append((self.command, urlsplit(self.path).path, int(code)))

    # ---------------------------------------------------------------- plumbing
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.raw_segments = [s for s in split.path.split("/") if s != ""]
        with self.hub.lock:
            self.hub.requests.append((method, split.path))
        try:
            if method == "PUT" and self.raw_segments[:1] == ["lfs-upload"]:
                return self._lfs_put()  # reads (or cuts off) the body itself
            self.body = self._read_body()  # always read the body, even for an error answer (keep-alive)
            self._route(method)
        except HubError as e:
            payload = json.dumps({"error": e.message}).encode()
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, payload, headers, content_type="application/json")
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - a bug in this server: answer 500, keep the traceback for the tests
            import traceback

            with self.hub.lock:
                self.hub.errors.append(traceback.format_exc())
            with contextlib.suppress(OSError):
                self._send(500, json.dumps({"error": "test server bug"}).encode())

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict | None = None,
        content_type: str = "application/json",
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _body_json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, f"invalid JSON body: {e}") from None

    # ---------------------------------------------------------------- auth
    def _user(self, *, required: bool) -> str | None:
        """The caller's user name. A wrong token is 401 everywhere; no token is 401 only for writes."""
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        if token:
            user = self.hub.tokens.get(token)
            if user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            return user
        if required:
            raise HubError(401, "You must be authenticated to do this (no token in the Authorization header)")
        return None

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise HubError(404, f"Repository not found: {URL_PREFIX[repo_type]}{repo_id}", "RepoNotFound")
        if write and user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    # ---------------------------------------------------------------- routing
    def _route(self, method: str) -> None:
        seg = self.raw_segments
        s = [unquote(x) for x in seg]
        if s[:2] == ["api", "whoami-v2"] and method == "GET":
            return self._whoami()
        if s[:2] == ["api", "agent-harnesses"]:
            return self._json(HARNESS_REGISTRY)
        if s[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if s[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo()
        if s[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return self._delete_repo()
        if len(s) >= 4 and s[0] == "api" and s[1] in REPO_TYPES:
            return self._api_repo(method, REPO_TYPES[s[1]], seg[2:])
        # git LFS batch: /{prefix}{ns}/{name}.git/info/lfs/objects/batch
        if len(s) >= 5 and s[-4:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            repo_type, rest = self._split_prefix(s[:-4])
            repo_id = "/".join(rest)
            if not repo_id.endswith(".git"):
                raise HubError(404, "not found")
            return self._lfs_batch(repo_type, repo_id[: -len(".git")])
        # file download: /{prefix}{ns}/{name}/resolve/{rev}/{path}
        if "resolve" in s and method in ("GET", "HEAD"):
            i = s.index("resolve")
            repo_type, rest = self._split_prefix(s[:i])
            if len(seg) > i + 2:
                return self._resolve(repo_type, "/".join(rest), s[i + 1], "/".join(s[i + 2 :]))
        raise HubError(404, f"no route for {method} {self.path}")

    @staticmethod
    def _split_prefix(parts: list[str]) -> tuple[str, list[str]]:
        if parts and parts[0] in ("datasets", "spaces"):
            return REPO_TYPES[parts[0]], parts[1:]
        return "model", parts

    def _api_repo(self, method: str, repo_type: str, seg: list[str]) -> None:
        """/api/{type}s/{ns}/{name}[/{action}/{rev}[/{path}]] (segments still URL-quoted)."""
        s = [unquote(x) for x in seg]
        actions = {
            "revision",
            "preupload",
            "commit",
            "tree",
            "paths-info",
            "refs",
            "branch",
            "tag",
            "commits",
            "settings",
        }
        # repo ids are "ns/name" (or a canonical "name"): the action is the first known keyword after it
        cut = next((i for i in (2, 1) if len(s) > i and s[i] in actions), len(s))
        repo_id, action, args = "/".join(s[:cut]), (s[cut] if cut < len(s) else None), s[cut + 1 :]
        if action is None and method == "GET":
            return self._info(repo_type, repo_id, "main")
        if action == "revision" and method == "GET":
            return self._info(repo_type, repo_id, args[0] if args else "main")
        if action == "preupload" and method == "POST":
            return self._preupload(repo_type, repo_id, args[0])
        if action == "commit" and method == "POST":
            return self._commit(repo_type, repo_id, args[0])
        if action == "tree" and method == "GET":
            return self._tree(repo_type, repo_id, args[0] if args else "main", "/".join(args[1:]))
        if action == "paths-info" and method == "POST":
            return self._paths_info(repo_type, repo_id, args[0])
        if action == "refs" and method == "GET":
            return self._refs(repo_type, repo_id)
        if action == "branch" and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, "/".join(args))
        if action == "tag" and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, repo_id, "/".join(args))
        if action == "commits" and method == "GET":
            return self._commits(repo_type, repo_id, args[0] if args else "main")
        if action == "settings" and method == "PUT":
            return self._settings(repo_type, repo_id)
        raise HubError(404, f"no route for {method} {self.path}")

    # ---------------------------------------------------------------- account and repos
    def _whoami(self) -> None:
        user = self._user(required=True)
        self._json(
            {
                "type": "user",
                "id": hashlib.md5(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "test", "role": "write", "createdAt": _now()},
                },
            }
        )

    def _validate_yaml(self) -> None:
        """The card's YAML front matter must parse to a mapping with list-valued ``tags`` (400 otherwise)."""
        text = str(self._body_json().get("content", ""))
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
        if match:
            import yaml

            try:
                data = yaml.safe_load(match[1])
            except yaml.YAMLError as e:
                raise HubError(400, f"Invalid YAML in the card metadata: {e}") from None
            if data is not None and not isinstance(data, dict):
                raise HubError(400, "The card metadata must be a YAML mapping")
            if isinstance(data, dict) and not isinstance(data.get("tags", []), list):
                raise HubError(400, '"tags" must be an array')
        self._json({"errors": [], "warnings": []})

    def _repo_url(self, repo: Repo) -> str:
        return f"http://{self.headers.get('Host')}/{URL_PREFIX[repo.type]}{repo.id}"

    def _create_repo(self) -> None:
        user = self._user(required=True)
        body = self._body_json()
        name, org = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"invalid repo type {repo_type!r}")
        if not name or not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}", name) or name.endswith(".git"):
            raise HubError(400, f"invalid repo name {name!r}")
        namespace = org or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace!r}")
        repo_id = f"{namespace}/{name}"
        private = body.get("visibility") == "private" if "visibility" in body else bool(body.get("private"))
        with self.hub.lock:
            existing = self.hub.repos.get((repo_type, repo_id))
            if existing is not None:
                return self._json(
                    {"error": f"You already created this {repo_type} repo", "url": self._repo_url(existing)},
                    status=409,
                )
            repo = Repo(repo_type, repo_id, user, private, _now())
            attributes = DEFAULT_GITATTRIBUTES + (DATASET_GITATTRIBUTES_EXTRA if repo_type == "dataset" else "")
            data = attributes.encode()
            sha = self.hub.store_blob(data)
            first = self.hub.make_commit(
                repo,
                None,
                "initial commit",
                "",
                user,
                {".gitattributes": Entry(len(data), sha, False)},
                {".gitattributes": git_blob_oid(data)},
            )
            repo.branches["main"] = first.sha
            self.hub.repos[(repo_type, repo_id)] = repo
        self._json({"url": self._repo_url(repo), "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()})

    def _delete_repo(self) -> None:
        body = self._body_json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self._user(required=True)}/{body.get('name')}"
        self._repo(repo_type, repo_id, write=True)
        with self.hub.lock:
            del self.hub.repos[(repo_type, repo_id)]
        self._json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        repo = self._repo(repo_type, repo_id, write=True)
        body = self._body_json()
        if "private" in body:
            repo.private = bool(body["private"])
        if "visibility" in body:
            repo.private = body["visibility"] == "private"
        self._json({})

    # ---------------------------------------------------------------- reading
    def _card_data(self, commit: Commit) -> dict | None:
        entry = commit.tree.get("README.md")
        if entry is None:
            return None
        text = self.hub.read_blob(entry.sha256).decode("utf-8", "replace")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
        if not match:
            return None
        try:
            import yaml

            data = yaml.safe_load(match[1])
        except Exception:  # noqa: BLE001 - a broken card is just not parsed
            return None
        return data if isinstance(data, dict) else None

    def _file_json(self, path: str, entry: Entry, commit: Commit, *, expand: bool) -> dict:
        out = {"type": "file", "oid": commit.git_oids[path], "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {
                "oid": entry.sha256,
                "size": entry.size,
                "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
            }
        if expand:
            out["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
            out["securityFileStatus"] = {"status": "safe"}
        return out

    def _dir_json(self, path: str, commit: Commit, *, expand: bool) -> dict:
        out = {
            "type": "directory",
            "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
        if expand:
            out["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return out

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commits[repo.resolve(revision)]
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=commit.git_oids[path])
                if entry.lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                    }
            siblings.append(sibling)
        card = self._card_data(commit)
        info = {
            "_id": hashlib.md5(repo.id.encode()).hexdigest()[:24],
            "id": repo.id,
            "author": repo.owner,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "siblings": siblings,
            "tags": list((card or {}).get("tags") or []),
        }
        if card is not None:
            info["cardData"] = card
            if repo_type == "model":
                for key in ("library_name", "pipeline_tag"):
                    if key in card:
                        info[key] = card[key]
        self._json(info)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commits[repo.resolve(revision)]
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(
                404,
                f"Entry not found: {path} in {repo_id} at {revision}",
                "EntryNotFound",
                headers={"X-Repo-Commit": commit.sha},
            )
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{commit.git_oids[path]}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": entry.size})
        data = self.hub.read_blob(entry.sha256)
        status, body = 200, data
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if not match:
                raise HubError(416, f"bad Range {range_header!r}")
            start = int(match[1]) if match[1] else max(0, len(data) - int(match[2]))
            end = int(match[2]) if match[1] and match[2] else len(data) - 1
            if start >= len(data) and len(data) > 0:
                raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, body, headers, content_type="application/octet-stream")

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commits[repo.resolve(revision)]
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        expand = self.query.get("expand", "").lower() in ("1", "true")
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in commit.tree):
            raise HubError(404, f"Entry not found: folder {folder!r} in {repo_id} at {revision}", "EntryNotFound")
        files, dirs = [], set()
        for path in sorted(commit.tree):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                if recursive or depth == 1:
                    dirs.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                files.append(path)
        out = [self._dir_json(d, commit, expand=expand) for d in sorted(dirs)]
        out += [self._file_json(p, commit.tree[p], commit, expand=expand) for p in files]
        self._json(out)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commits[repo.resolve(revision)]
        if "json" in self.headers.get("Content-Type", ""):
            form = self._body_json()
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(self.body.decode())
            paths = form.get("paths", [])
            expand = form.get("expand", ["False"])[-1].lower() in ("1", "true")
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.tree:
                out.append(self._file_json(path, commit.tree[path], commit, expand=expand))
            elif any(p.startswith(path + "/") for p in commit.tree):
                out.append(self._dir_json(path, commit, expand=expand))
        self._json(out)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id)
            out = {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()
                ],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
                "converts": [],
            }
            if self.query.get("include_prs"):
                out["pullRequests"] = [
                    {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": s} for n, s in repo.prs.items()
                ]
        self._json(out)

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id)
            sha: str | None = repo.resolve(revision)
            out = []
            while sha is not None:
                c = repo.commits[sha]
                out.append(
                    {
                        "id": c.sha,
                        "title": c.title,
                        "message": c.message,
                        "authors": [{"user": c.author, "avatar": ""}],
                        "date": c.date,
                    }
                )
                sha = c.parent
        self._json(out)

    # ---------------------------------------------------------------- refs
    def _branch(self, method: str, repo_type: str, repo_id: str, name: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id, write=True)
            if method == "DELETE":
                if name == "main":
                    raise HubError(403, "Cannot delete the main branch")
                if name not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                del repo.branches[name]
                return self._json({})
            if name in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{name}")
            start = self._body_json().get("startingPoint")
            repo.branches[name] = repo.resolve(start) if start else repo.branches["main"]
        self._json({})

    def _tag(self, method: str, repo_type: str, repo_id: str, arg: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id, write=True)
            if method == "DELETE":
                if arg not in repo.tags:
                    raise HubError(404, f"Invalid rev id: {arg}", "RevisionNotFound")
                del repo.tags[arg]
                return self._json({})
            body = self._body_json()
            tag = body.get("tag")
            if not tag:
                raise HubError(400, "missing 'tag'")
            if tag in repo.tags:
                raise HubError(409, f"Tag already exists: {tag}")
            repo.tags[tag] = repo.resolve(arg)
        self._json({})

    # ---------------------------------------------------------------- uploads
    def _upload_ref(self, repo: Repo, revision: str) -> str:
        """The sha a write to ``revision`` starts from (a branch or a PR ref; tags and shas are read-only)."""
        if revision in repo.branches or re.fullmatch(r"refs/pr/\d+", revision):
            return repo.resolve(revision)
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.branches:
            return repo.branches[revision[len("refs/heads/") :]]
        raise HubError(404, f"Invalid rev id: {revision} (not a branch of {repo.id})", "RevisionNotFound")

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id, write=True)
            commit = repo.commits[self._upload_ref(repo, revision)]
        attributes = commit.tree.get(".gitattributes")
        patterns = _lfs_patterns(self.hub.read_blob(attributes.sha256).decode()) if attributes else []
        files = []
        for f in self._body_json().get("files", []):
            path, size = f["path"], int(f.get("size", 0))
            lfs = size >= LFS_SIZE_THRESHOLD or any(_matches(path, p) for p in patterns)
            existing = commit.tree.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else commit.git_oids[path]
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id, write=True)
        body = self._body_json()
        if body.get("operation") != "upload":
            raise HubError(400, "only the upload operation is supported")
        host = self.headers.get("Host")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            out = {"oid": oid, "size": size}
            if oid not in repo.lfs_objects:  # content-addressed: objects the repo holds need no upload
                href = f"http://{host}/lfs-upload/{repo_type}/{quote(repo.id, safe='')}/{oid}/{size}"
                out["actions"] = {"upload": {"href": href, "expires_at": "2099-01-01T00:00:00Z"}}
            objects.append(out)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self) -> None:
        """PUT /lfs-upload/{type}/{repo}/{oid}/{size}: the raw bytes, checked against oid and size."""
        _, repo_type, repo_id, oid, size = [unquote(x) for x in self.raw_segments]
        length = int(self.headers.get("Content-Length") or -1)
        with self.hub.lock:
            kill = self.hub.kill_puts > 0 and self.hub.puts_before_kill <= 0
            if self.hub.kill_puts > 0 and not kill:
                self.hub.puts_before_kill -= 1
            if kill:
                self.hub.kill_puts -= 1
                self.hub.killed_puts += 1
        if kill:
            # An interrupted upload: take part of the body, then drop the connection without an answer.
            with contextlib.suppress(OSError):
                self.rfile.read(max(1, length // 2) if length > 0 else 1)
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        data = self._read_body()
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        if len(data) != int(size) or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match oid {oid} / size {size}")
        self.hub.store_blob(data)
        with self.hub.lock:
            repo.lfs_objects.add(oid)
            self.hub.lfs_puts += 1
            self.hub.lfs_put_oids.append(oid)
        self._send(200, b"")

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        """Apply an ndjson commit atomically: everything is checked before the ref moves."""
        user = self._user(required=True)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first ndjson line must be the commit header")
        header = lines[0]["value"]
        create_pr = self.query.get("create_pr") in ("1", "true", "True")
        with self.hub.lock:
            repo = self._repo(repo_type, repo_id, write=True)
            base = self._upload_ref(repo, revision)
            parent_commit = header.get("parentCommit")
            if parent_commit and parent_commit != base:
                raise HubError(412, f"A commit has happened since {parent_commit}: {revision} is at {base}")
            tree = dict(repo.commits[base].tree)
            git_oids = dict(repo.commits[base].git_oids)
            pending_blobs: list[bytes] = []
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = str(value.get("path", "")).strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding for {path}")
                    data = base64.b64decode(value["content"])
                    pending_blobs.append(data)
                    tree[path] = Entry(len(data), hashlib.sha256(data).hexdigest(), False)
                    git_oids[path] = git_blob_oid(data)
                elif key == "lfsFile":
                    oid = value["oid"]
                    if oid not in repo.lfs_objects:
                        raise HubError(
                            422,
                            f"Your push was rejected because an LFS pointer pointed to a file that "
                            f"does not exist: {path} (oid {oid}) was never uploaded",
                        )
                    size = value.get("size")
                    real = self.hub.blob_path(oid).stat().st_size
                    if size is not None and int(size) != real:
                        raise HubError(422, f"LFS object {oid} for {path} has size {real}, not {size}")
                    tree[path] = Entry(real, oid, True)
                    git_oids[path] = git_blob_oid(lfs_pointer(oid, real))
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path], git_oids[path]
                elif key == "deletedFolder":
                    gone = [p for p in tree if p.startswith(path + "/")]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del tree[p], git_oids[p]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            for data in pending_blobs:
                self.hub.store_blob(data)
            title = header.get("summary") or "Upload files"
            commit = self.hub.make_commit(repo, base, title, header.get("description") or "", user, tree, git_oids)
            url = self._repo_url(repo)
            answer = {"success": True, "commitOid": commit.sha, "commitUrl": f"{url}/commit/{commit.sha}"}
            if create_pr:
                number = max([0, *repo.prs]) + 1
                repo.prs[number] = commit.sha
                answer["pullRequestUrl"] = f"{url}/discussions/{number}"
            elif re.fullmatch(r"refs/pr/\d+", revision):
                repo.prs[int(revision.rsplit("/", 1)[1])] = commit.sha
            else:
                repo.branches[revision.removeprefix("refs/heads/")] = commit.sha
        self._json(answer)
