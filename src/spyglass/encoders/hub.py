"""``spyglass models pull NAME``: fetch a named checkpoint's files into the local cache.

This is the only code in Spyglass that downloads, and only when asked to. Everything
else (loading, indexing, searching) reads local files and never opens a connection.

What to fetch is data: a model of ``models.json`` with a ``pull`` entry names its hub
repository (``hub_id``), a revision and its files (each optionally with ``size`` and
``sha256``; ``or``: alternatives tried in order when the hub lacks a file; ``optional``:
fetched when present).

Where from: ``RuntimeSettings.hub_url``. An ``http(s)`` base is read as the Hugging Face
hub reads: ``{base}/{repo}/resolve/{revision}/{path}`` (so hub mirrors work too); a
``file://`` URL or a plain directory is a local mirror holding ``{base}/{repo}/{path}``.

Where to: ``{cache_dir}/pulled/{name}/``, laid out as the repository is, which is the
folder ``--model NAME`` then loads (see :func:`spyglass.encoders.load_encoder`). A file
appears there only once complete and verified: it is written to
``{cache_dir}/pulled/.partial/{name}/{path}.part`` (an interrupted download resumes
from there, with an HTTP range request), checked, then renamed into place.

Verification, file by file: the size against the catalogue or what the hub states
(``X-Linked-Size``, ``Content-Range``, ``Content-Length``), and the SHA-256 against the
catalogue, else against the hub's stated one (the hub sends the SHA-256 of large, LFS
stored, files as ``X-Linked-Etag``). A file with no known hash is trusted on first
download: its SHA-256 is recorded in ``.spyglass-pull.json`` in the model's folder and
every later pull checks the files against it. A mismatch deletes the download and fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from spyglass.errors import ModelError, ModelNotFound
from spyglass.settings import RuntimeSettings

#: Seconds to wait for the hub to accept a connection (and for each read): offline,
#: pulling fails at once instead of hanging on retries.
CONNECT_TIMEOUT = 10.0
#: Bytes read and hashed per step (and between progress reports).
CHUNK = 1 << 20
MANIFEST = ".spyglass-pull.json"
PARTIAL = ".partial"
SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: progress(file path, bytes so far, total bytes or None when unknown)
Progress = Callable[[str, int, int | None], None]


# -- what to fetch ----------------------------------------------------------------------


@dataclass(frozen=True)
class PullFile:
    """One file of a checkpoint: its path in the repository, what is known of it, and
    the files that may stand in for it when the hub does not have it."""

    path: str
    size: int | None = None
    sha256: str | None = None
    optional: bool = False
    alternatives: tuple[PullFile, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PullFile:
        sha = data.get("sha256")
        if sha is not None and not SHA256.match(str(sha)):
            raise ModelError(f"models.json: '{sha}' is not a SHA-256 (64 hex digits)")
        return cls(
            path=str(data["path"]),
            size=int(data["size"]) if data.get("size") is not None else None,
            sha256=str(sha) if sha else None,
            optional=bool(data.get("optional", False)),
            alternatives=tuple(cls.from_json(a) for a in data.get("or", ())),
        )

    def choices(self) -> tuple[PullFile, ...]:
        return (self, *self.alternatives)

    def describe(self) -> str:
        """``model.safetensors (or pytorch_model.bin)``"""
        others = " or ".join(a.path for a in self.alternatives)
        return f"{self.path} (or {others})" if others else self.path


@dataclass(frozen=True)
class PullPlan:
    """A named model's repository, revision and files (from ``models.json``)."""

    name: str
    repo: str
    revision: str
    files: tuple[PullFile, ...]
    #: A rough download size for people ("about 600 MB"), or "".
    download: str = ""

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> PullPlan:
        pull = spec.get("pull")
        if not isinstance(pull, Mapping) or not spec.get("hub_id"):
            raise ModelNotFound(
                f"model '{name}' has nothing to pull: "
                "see `spyglass models` for the models that can be pulled"
            )
        return cls(
            name=name,
            repo=str(spec["hub_id"]),
            revision=str(pull.get("revision", "main")),
            files=tuple(PullFile.from_json(f) for f in pull["files"]),
            download=str(pull.get("download", "")),
        )

    def required(self) -> tuple[PullFile, ...]:
        return tuple(f for f in self.files if not f.optional)


def pullable_models(catalogue: Mapping[str, Mapping[str, Any]]) -> dict[str, PullPlan]:
    """name -> plan, for the models of ``catalogue`` that have a ``pull`` entry."""
    return {n: PullPlan.from_spec(n, s) for n, s in catalogue.items() if "pull" in s}


def pulled_root(cache_dir: Path) -> Path:
    return cache_dir / "pulled"


def pulled_folder(cache_dir: Path, name: str) -> Path:
    """Where ``spyglass models pull NAME`` puts NAME's files."""
    return pulled_root(cache_dir) / name


def present_files(plan: PullPlan, folder: Path) -> list[str] | None:
    """The path of each required file found in ``folder`` (an alternative where the
    first choice is absent), or None when one is missing."""
    found = []
    for wanted in plan.required():
        present = [c.path for c in wanted.choices() if (folder / c.path).is_file()]
        if not present:
            return None
        found.append(present[0])
    return found


def is_pulled(plan: PullPlan, cache_dir: Path) -> bool:
    """Whether every required file of ``plan`` is in its pulled folder (pulled, or
    copied there by hand)."""
    return present_files(plan, pulled_folder(cache_dir, plan.name)) is not None


def copy_by_hand(plan: PullPlan, cache_dir: Path, hub_url: str) -> str:
    """How to install ``plan`` without Spyglass downloading, as one clause."""
    files = ", ".join(f.describe() for f in plan.required())
    page = f"{hub_url.rstrip('/')}/{plan.repo}" if is_http(hub_url) else plan.repo
    return (
        f"to install {plan.name} by hand, copy {files} from {page} (revision {plan.revision}) into "
        f"{pulled_folder(cache_dir, plan.name)}, keeping their sub-folders"
    )


def not_pulled_message(plan: PullPlan, cache_dir: Path, hub_url: str) -> str:
    from spyglass.encoders.checkpoint import hub_cache_dir

    return (
        f"model '{plan.name}' is not pulled and not in the local Hugging Face cache "
        f"({hub_cache_dir()}): run `spyglass models pull {plan.name}` where the internet "
        f"is reachable, or {copy_by_hand(plan, cache_dir, hub_url)}; "
        "or use the bundled model (--model bundled)"
    )


# -- where from -------------------------------------------------------------------------


@dataclass
class Remote:
    """An opened remote file: its bytes from ``start`` on, and what the source says."""

    stream: IO[bytes]
    #: Offset of the first byte of ``stream`` (0 when the source ignored the resume).
    start: int
    size: int | None
    sha256: str | None
    commit: str | None = None

    def close(self) -> None:
        self.stream.close()


class Source(Protocol):
    """Where files come from: the hub over HTTP, or a local mirror."""

    def describe(self) -> str: ...

    def open(self, repo: str, revision: str, path: str, start: int) -> Remote | None:
        """The file from byte ``start`` on (or from 0), or None if the source lacks it.
        Raises :class:`Unreachable` when the source cannot be reached at all."""
        ...


class Unreachable(OSError):
    """The source could not be reached (no network, refused, timed out)."""


def is_http(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def source_for(hub_url: str) -> Source:
    """An http(s) URL -> :class:`HubSource`; ``file://`` or a directory ->
    :class:`MirrorSource`."""
    if is_http(hub_url):
        return HubSource(hub_url)
    parts = urllib.parse.urlsplit(hub_url)
    if parts.scheme == "file":
        return MirrorSource(Path(urllib.request.url2pathname(parts.path)))
    if parts.scheme and len(parts.scheme) > 1:
        raise ModelError(
            f"hub URL '{hub_url}' is neither http(s), file:// nor a directory (SPYGLASS_HUB_URL)"
        )
    return MirrorSource(Path(hub_url).expanduser())


class _KeepRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Follows redirects and keeps the headers of each redirect response: the hub states
    an LFS file's size and SHA-256 on the redirect to its storage, not after it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Mapping[str, str]] = []

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.seen.append(dict(headers.items()))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HubSource:
    """The Hugging Face hub, or a server laid out as it is."""

    def __init__(self, base: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout

    def describe(self) -> str:
        return self.base

    def url(self, repo: str, revision: str, path: str) -> str:
        quoted = urllib.parse.quote(path)
        return f"{self.base}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/{quoted}"

    def open(self, repo: str, revision: str, path: str, start: int) -> Remote | None:
        redirects = _KeepRedirectHeaders()
        opener = urllib.request.build_opener(redirects)
        request = urllib.request.Request(self.url(repo, revision, path))
        request.add_header("User-Agent", "spyglass")
        if start:
            request.add_header("Range", f"bytes={start}-")
        try:
            response = opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404:
                return None
            if error.code == 416 and start:  # the partial file is already complete
                return self.open(repo, revision, path, 0)
            raise ModelError(
                f"{self.base} answered HTTP {error.code} for {repo}/{path}"
                + (" (a gated or private model?)" if error.code in (401, 403) else "")
            ) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"cannot reach {self.base} ({reason})") from error
        headers: dict[str, str] = {}
        for seen in [*redirects.seen, dict(response.headers.items())]:
            for key, value in seen.items():
                headers.setdefault(key.lower(), value)
        resumed = response.status == 206
        return Remote(
            stream=response,
            start=start if resumed else 0,
            size=_stated_size(headers, start if resumed else 0),
            sha256=_stated_sha256(headers),
            commit=headers.get("x-repo-commit"),
        )


def _stated_size(headers: Mapping[str, str], start: int) -> int | None:
    """The whole file's size: the hub's ``X-Linked-Size``, a range's total, or the
    length of a whole-file answer."""
    for value in (
        headers.get("x-linked-size"),
        headers.get("content-range", "").rpartition("/")[2],
    ):
        if value and value.strip().isdigit():
            return int(value)
    length = headers.get("content-length", "")
    return start + int(length) if length.strip().isdigit() else None


def _stated_sha256(headers: Mapping[str, str]) -> str | None:
    """The hub's SHA-256 of an LFS file (``X-Linked-Etag``); a plain ``ETag`` is a git
    blob id or an opaque tag, not a SHA-256, unless it has the form of one."""
    for key in ("x-linked-etag", "etag"):
        value = headers.get(key, "").strip().removeprefix("W/").strip('"').lower()
        if SHA256.match(value):
            return value
    return None


class MirrorSource:
    """A local folder holding ``{repo}/{path}`` (``file://`` URL or plain path)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def open(self, repo: str, revision: str, path: str, start: int) -> Remote | None:
        if not self.root.is_dir():
            raise Unreachable(f"cannot reach {self.root} (no such directory)")
        file = self.root / repo / path
        if not file.is_file():
            return None
        size = file.stat().st_size
        handle = file.open("rb")
        start = start if start <= size else 0
        handle.seek(start)
        return Remote(stream=handle, start=start, size=size, sha256=None)


# -- the pull ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PulledFile:
    path: str
    size: int
    sha256: str
    #: How the SHA-256 was checked: "catalogue" (models.json), "hub" (the hub's stated
    #: hash), "recorded" (an earlier pull's record) or "first download" (none known: now
    #: recorded).
    verified: str
    #: Fetched now (False: it was already there and was checked).
    downloaded: bool


@dataclass(frozen=True)
class PullReport:
    name: str
    folder: Path
    files: tuple[PulledFile, ...]
    #: Optional files the source did not have (or could not be asked for).
    skipped: tuple[str, ...] = ()
    commit: str | None = None

    @property
    def downloaded_bytes(self) -> int:
        return sum(f.size for f in self.files if f.downloaded)


@dataclass
class _Pull:
    plan: PullPlan
    cache_dir: Path
    hub_url: str
    source: Source
    progress: Progress | None
    recorded: dict[str, Any] = field(default_factory=dict)
    commit: str | None = None
    #: Whether the source answered once: a later connection error is an interruption,
    #: not an offline machine.
    reached: bool = False

    @property
    def folder(self) -> Path:
        return pulled_folder(self.cache_dir, self.plan.name)

    def partial(self, path: str) -> Path:
        return pulled_root(self.cache_dir) / PARTIAL / self.plan.name / f"{path}.part"

    def unreachable(self, error: Unreachable) -> ModelError:
        if self.reached:
            return ModelError(
                f"{error}; the download stopped part way: run "
                f"`spyglass models pull {self.plan.name}` again to resume"
            )
        return ModelNotFound(f"{error}; {copy_by_hand(self.plan, self.cache_dir, self.hub_url)}")

    def check_present(self, wanted: PullFile) -> PulledFile:
        """A file already in the folder, hashed and checked against what is known."""
        path = self.folder / wanted.path
        digest = sha256_of(path)
        size = path.stat().st_size
        known = self.recorded.get(wanted.path, {})
        expected, how = wanted.sha256, "catalogue"
        if expected is None and known.get("sha256"):
            expected, how = known["sha256"], "recorded"
        if expected is None:
            how = str(known.get("verified") or "first download")
        elif digest != expected:
            path.unlink()
            raise ModelError(
                f"{path} is not the file that was pulled (SHA-256 {digest[:12]}..., "
                f"expected {expected[:12]}...); it was removed: pull again"
            )
        return PulledFile(wanted.path, size, digest, how, downloaded=False)

    def fetch(self, wanted: PullFile) -> PulledFile | None:
        """Download one file (resuming a partial one), verify it and move it into
        place; None when the source does not have it."""
        partial = self.partial(wanted.path)
        start = partial.stat().st_size if partial.is_file() else 0
        try:
            remote = self.source.open(self.plan.repo, self.plan.revision, wanted.path, start)
        except Unreachable as error:
            raise self.unreachable(error) from error
        if remote is None:
            return None
        self.reached = True
        self.commit = self.commit or remote.commit
        expected_size = wanted.size if wanted.size is not None else remote.size
        expected_sha, how = wanted.sha256, "catalogue"
        if expected_sha is None and remote.sha256 is not None:
            expected_sha, how = remote.sha256, "hub"
        if expected_sha is None:
            how = "first download"
        try:
            digest, size = self.receive(remote, partial, wanted.path, expected_size)
        finally:
            remote.close()
        problem = None
        if expected_size is not None and size != expected_size:
            problem = f"{size} bytes, expected {expected_size}"
        elif expected_sha is not None and digest != expected_sha:
            problem = f"SHA-256 {digest[:12]}..., expected {expected_sha[:12]}..."
        if problem:
            partial.unlink(missing_ok=True)
            raise ModelError(
                f"{self.plan.repo}/{wanted.path} from {self.source.describe()} failed "
                f"verification ({problem}); nothing was kept: pull again"
            )
        target = self.folder / wanted.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
        return PulledFile(wanted.path, size, digest, how, downloaded=True)

    def receive(
        self, remote: Remote, partial: Path, label: str, total: int | None
    ) -> tuple[str, int]:
        """Append the remote bytes to ``partial`` (from ``remote.start``), hashing the
        whole file; returns (SHA-256, size)."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        done = 0
        with partial.open("r+b" if partial.exists() else "wb") as out:
            if remote.start:
                for chunk in _chunks(out, remote.start):
                    digest.update(chunk)
                done = remote.start
            out.seek(done)
            out.truncate()
            self.report(label, done, total)
            while True:
                try:
                    chunk = remote.stream.read(CHUNK)
                except OSError as error:  # a dropped connection or a read time-out
                    out.flush()
                    raise self.unreachable(
                        Unreachable(f"lost {self.source.describe()} ({error})")
                    ) from error
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                self.report(label, done, total)
        return digest.hexdigest(), done

    def report(self, label: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(label, done, total)

    def run(self) -> PullReport:
        manifest = read_manifest(self.folder)
        if manifest.get("repo") == self.plan.repo:
            self.recorded = dict(manifest.get("files", {}))
            self.commit = manifest.get("commit")
        pulled: list[PulledFile] = []
        skipped: list[str] = []
        all_required_here = present_files(self.plan, self.folder) is not None
        for wanted in (*self.plan.required(), *(f for f in self.plan.files if f.optional)):
            got = self.one(wanted, tolerate_offline=wanted.optional and all_required_here)
            if got is None:
                skipped.append(wanted.describe())
            else:
                pulled.append(got)
        write_manifest(self.folder, self, pulled, skipped)
        shutil.rmtree(pulled_root(self.cache_dir) / PARTIAL / self.plan.name, ignore_errors=True)
        return PullReport(self.plan.name, self.folder, tuple(pulled), tuple(skipped), self.commit)

    def one(self, wanted: PullFile, tolerate_offline: bool) -> PulledFile | None:
        """The first choice of ``wanted`` that is here or that the source has."""
        for choice in wanted.choices():
            if (self.folder / choice.path).is_file():
                return self.check_present(choice)
        if wanted.optional and wanted.path in self.recorded.get(".skipped", []):
            return None  # an earlier pull found the source without it
        for choice in wanted.choices():
            try:
                got = self.fetch(choice)
            except ModelNotFound:
                if tolerate_offline:
                    return None
                raise
            if got is not None:
                return got
        if wanted.optional:
            return None
        raise ModelNotFound(
            f"{self.source.describe()} has no {wanted.describe()} in {self.plan.repo} "
            f"(revision {self.plan.revision})"
        )


def pull(plan: PullPlan, settings: RuntimeSettings, progress: Progress | None = None) -> PullReport:
    """Fetch and verify ``plan``'s files into ``{cache_dir}/pulled/{name}`` from
    ``settings.hub_url``. Files already there are checked, not fetched again; a partial
    download resumes. Raises :class:`ModelNotFound` (one line that says how to copy
    the files in by hand) when the source cannot be reached or lacks a file, and
    :class:`ModelError` when a file fails verification (the download is deleted)."""
    source = source_for(settings.hub_url)
    return _Pull(plan, settings.cache_dir, settings.hub_url, source, progress).run()


# -- the record of a pull ---------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(folder: Path, state: _Pull, files: list[PulledFile], skipped: list[str]) -> None:
    record: dict[str, Any] = {
        f.path: {"size": f.size, "sha256": f.sha256, "verified": f.verified} for f in files
    }
    record[".skipped"] = [s.split(" ")[0] for s in skipped]
    data = {
        "name": state.plan.name,
        "repo": state.plan.repo,
        "revision": state.plan.revision,
        "commit": state.commit,
        "source": state.source.describe(),
        "files": record,
    }
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".manifest-", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
    os.replace(temporary, folder / MANIFEST)


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _chunks(handle: IO[bytes], limit: int) -> Iterator[bytes]:
    """The first ``limit`` bytes of ``handle``, in chunks."""
    handle.seek(0)
    left = limit
    while left > 0:
        chunk = handle.read(min(CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        yield chunk


__all__ = [
    "PullFile",
    "PullPlan",
    "PullReport",
    "is_pulled",
    "not_pulled_message",
    "pull",
    "pullable_models",
    "pulled_folder",
]
