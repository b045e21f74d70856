"""Tests for rnnlm.clean and the download/clean stage scripts run end to end."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA, deep_update, run_stage_script

from rnnlm import fileio
from rnnlm.clean import clean_file, clean_text, count_lines, decode_utf8, strip_gutenberg
from rnnlm.errors import RnnlmError
from rnnlm.params import CleanConfig

ROOT = Path(__file__).resolve().parents[1]
CLEAN_CFG = CleanConfig(mode="letters", max_chars=0, strip_gutenberg=True)

SAMPLE = "The Time Machine, by H. G. Wells [1898]\n\n\n\nI\r\nThe Time-Traveller's 2nd   line\rend.\n"


# --------------------------------------------------------------------------- modes
def test_letters_mode():
    out = clean_text(SAMPLE, "letters")
    assert out == "the time machine by h g wells i the time traveller s nd line end"
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_lines_mode_keeps_characters():
    assert clean_text("a, B!\r\nc\rd\n\ne\n", "lines") == "a, B! c d  e "
    assert clean_text("想要有直升机\n想要和你飞到宇宙去\r\n", "lines") == "想要有直升机 想要和你飞到宇宙去 "


def test_raw_mode_normalises_line_endings():
    assert clean_text("a\r\nb\rc\nd\r\n\r\n", "raw") == "a\nb\nc\nd\n\n"
    assert clean_text("Tab\tand ÜTF-8 ✓", "raw") == "Tab\tand ÜTF-8 ✓"


def test_max_chars():
    assert clean_text(SAMPLE, "letters", max_chars=8) == "the time"
    assert clean_text("想要有\n直升机", "lines", max_chars=5) == "想要有 直"
    assert clean_text("ab\r\ncd", "raw", max_chars=3) == "ab\n"
    assert clean_text("abc", "raw", max_chars=0) == "abc"  # 0 = all
    assert clean_text("abc", "raw", max_chars=10) == "abc"


def test_unknown_mode_and_negative_max_chars():
    with pytest.raises(RnnlmError, match="clean.mode.*'word'"):
        clean_text("abc", "word")
    with pytest.raises(RnnlmError, match="clean.max_chars"):
        clean_text("abc", "raw", max_chars=-1)


def test_empty_result_is_an_error():
    with pytest.raises(RnnlmError, match="clean.mode=letters") as ei:
        clean_text("1234 — 你好\n\n", "letters")
    assert "max_chars" not in str(ei.value)
    with pytest.raises(RnnlmError, match=r"clean.mode=lines, clean.max_chars=2"):
        clean_text("\n\nxyz", "lines", max_chars=2)
    with pytest.raises(RnnlmError, match="clean.mode=raw"):
        clean_text("*** END OF THE PROJECT GUTENBERG EBOOK X ***\nfooter", "raw", strip_gutenberg=True)


@pytest.mark.parametrize("mode", ["letters", "lines", "raw"])
def test_an_empty_input_is_called_empty_in_every_mode(mode, tmp_path):
    """Issue 14 item 9: an empty file was told "mode 'letters' keeps only A-Z/a-z"."""
    with pytest.raises(RnnlmError, match="^the input is empty$"):
        clean_text("", mode)
    with pytest.raises(RnnlmError, match="whitespace only"):
        clean_text(" \n\n", mode)
    raw = tmp_path / "corpus.txt"
    raw.write_bytes(b"")
    with pytest.raises(RnnlmError, match=f"^{re.escape(str(raw))}: the input is empty$"):
        clean_file(CleanConfig(mode=mode, max_chars=0, strip_gutenberg=True), raw, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


# --------------------------------------------------------------------------- Gutenberg
GUTENBERG = (
    "The Project Gutenberg eBook of The Time Machine\r\n"
    "Release date: October 2, 2004 [eBook #35]\r\n"
    "\r\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***\r\n"
    "\r\n"
    "The Time Machine\r\n"
    "by H. G. Wells\r\n"
    "\r\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***\r\n"
    "Updated editions will replace the previous one.\r\n"
)


def test_strip_gutenberg_with_markers():
    assert strip_gutenberg(GUTENBERG) == "The Time Machine\r\nby H. G. Wells\r\n"
    older = (
        "header\n***START OF THIS PROJECT GUTENBERG EBOOK X***\nbody line\n"
        "*** End of this Project Gutenberg eBook X ***\nlicence\n"
    )
    assert strip_gutenberg(older) == "body line\n"


def test_strip_gutenberg_with_one_marker():
    assert strip_gutenberg("licence\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nbody\n") == "body\n"
    assert strip_gutenberg("body\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n") == "body\n"


def test_strip_gutenberg_without_markers_is_identity():
    text = "No markers here.\n*** not a marker ***\nSTART OF THE PROJECT GUTENBERG EBOOK (no asterisks)\n"
    assert strip_gutenberg(text) == text


def test_clean_text_gutenberg_flag():
    assert clean_text(GUTENBERG, "letters", strip_gutenberg=True) == "the time machine by h g wells"
    kept = clean_text(GUTENBERG, "letters", strip_gutenberg=False)
    assert kept.startswith("the project gutenberg ebook") and "updated editions" in kept


# --------------------------------------------------------------------------- decoding
def test_decode_utf8():
    assert decode_utf8("café ✓".encode()) == "café ✓"
    assert decode_utf8(b"\xef\xbb\xbfhello", "f") == "hello"  # BOM dropped
    with pytest.raises(RnnlmError) as ei:
        decode_utf8(b"line one\nabc\xffdef", "data/raw/corpus.txt")
    msg = str(ei.value)
    assert "data/raw/corpus.txt" in msg
    assert "byte offset 12" in msg
    assert "line 2" in msg


def test_decode_latin1_is_not_mojibake():
    with pytest.raises(RnnlmError, match="byte offset 3"):
        decode_utf8("caf\u00e9 au lait".encode("latin-1"), "x")


def test_count_lines():
    assert [count_lines(t) for t in ("", "a", "a\n", "a\r\nb", "a\rb\r", "\n\n")] == [0, 1, 1, 2, 2, 2]


# --------------------------------------------------------------------------- run_clean
def run_clean(cfg, raw_path, out_path, metrics_path) -> dict:
    """Clean one file and write its metrics, as the clean stage does for a one-file corpus."""
    metrics = clean_file(cfg, raw_path, out_path)
    fileio.write_json(metrics_path, metrics)
    return metrics


def test_run_clean_writes_outputs(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_bytes(SAMPLE.encode())
    m = run_clean(CLEAN_CFG, raw, tmp_path / "clean" / "corpus.txt", tmp_path / "metrics" / "clean.json")
    out = (tmp_path / "clean" / "corpus.txt").read_text(encoding="utf-8")
    assert out == "the time machine by h g wells i the time traveller s nd line end"
    assert json.loads((tmp_path / "metrics" / "clean.json").read_text()) == m
    assert m["mode"] == "letters"
    assert (m["chars_in"], m["chars_out"]) == (len(SAMPLE), len(out))
    assert (m["lines_in"], m["lines_out"]) == (7, 1)
    assert (m["distinct_chars_in"], m["distinct_chars_out"]) == (len(set(SAMPLE)), len(set(out)))
    assert m["gutenberg_markers"] is False


def test_run_clean_invalid_utf8_and_missing(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"ok\n\x80bad")
    with pytest.raises(RnnlmError, match=r"raw\.txt: not valid UTF-8 at byte offset 3"):
        run_clean(CLEAN_CFG, raw, tmp_path / "o.txt", tmp_path / "m.json")
    assert not (tmp_path / "o.txt").exists() and not (tmp_path / "m.json").exists()
    with pytest.raises(RnnlmError, match="not found; run the download stage first"):
        run_clean(CLEAN_CFG, tmp_path / "absent.txt", tmp_path / "o.txt", tmp_path / "m.json")


# --------------------------------------------------------------------------- stage scripts
def run_stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_stage_script(name, cwd, timeout=120)


def write_params(d: Path, text: str) -> None:
    """params.yaml in ``d``: the committed one (every default) with the sections of ``text`` changed."""
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(text))
    (d / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def test_stages_end_to_end_local_file(tmp_path):
    body = "Hello, World!\r\nSecond line: 42.\n"
    (tmp_path / "data" / "corpora").mkdir(parents=True)
    (tmp_path / "data" / "corpora" / "mine.txt").write_bytes(body.encode())
    sha = hashlib.sha256(body.encode()).hexdigest()
    write_params(
        tmp_path, f"download:\n  corpus: data/corpora/mine.txt\n  sha256: {sha}\n  mirrors: []\nclean:\n  mode: raw\n"
    )
    r = run_stage("download", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "download: data/corpora/mine.txt:" in r.stdout
    assert sorted(p.name for p in (tmp_path / "data" / "raw").iterdir()) == ["corpus.txt", "source.json"]
    src = json.loads((tmp_path / "data" / "raw" / "source.json").read_text())
    assert src == {
        "corpus": "data/corpora/mine.txt",
        "kind": "path",
        "source": "data/corpora/mine.txt",
        "sha256": sha,
        "source_bytes": len(body.encode()),
        "bytes": len(body.encode()),
    }
    r = run_stage("clean", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "clean" / "corpus.txt").read_bytes() == b"Hello, World!\nSecond line: 42.\n"
    m = json.loads((tmp_path / "metrics" / "clean.json").read_text())
    assert m["mode"] == "raw" and m["chars_out"] == len(body) - 1 and m["lines_out"] == 2


@pytest.mark.parametrize(
    "corpus, mode, max_chars, chars_out, distinct_out",
    [
        ("timemachine", "letters", 0, None, 27),
        ("jaychou", "lines", 10000, 10000, 1027),  # the d2l Jay Chou setting: vocabulary of 1027
    ],
)
def test_stages_end_to_end_real_mirror(tmp_path, corpus, mode, max_chars, chars_out, distinct_out):
    write_params(
        tmp_path,
        f"download:\n  corpus: {corpus}\n  mirrors: [{json.dumps(str(SHARED_DATA))}]\n"
        f"  retries: 0\nclean:\n  mode: {mode}\n  max_chars: {max_chars}\n",
    )
    r = run_stage("download", tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "data" / "raw" / "source.json").read_text())["kind"] == "mirror"
    r = run_stage("clean", tmp_path)
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "data" / "clean" / "corpus.txt").read_text(encoding="utf-8")
    m = json.loads((tmp_path / "metrics" / "clean.json").read_text())
    assert len(set(out)) == m["distinct_chars_out"] == distinct_out
    if chars_out is not None:
        assert len(out) == m["chars_out"] == chars_out
    if mode == "letters":
        assert set(out) == set("abcdefghijklmnopqrstuvwxyz ")


def test_failing_download_stage(tmp_path):
    # a corrupted mirror copy, then a loopback URL where nothing listens: both sources fail
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "corpus.txt").write_bytes(b"corrupted")
    write_params(
        tmp_path,
        f"download:\n  corpus: http://127.0.0.1:{port}/corpus.txt\n  sha256: {'a' * 64}\n"
        "  mirrors: [mirror]\n  retries: 0\n  timeout: 5\n",
    )
    r = run_stage("download", tmp_path)
    assert r.returncode == 1
    *waiting, error = r.stderr.splitlines()
    assert [line.split(" (")[0] for line in waiting] == [f"downloading http://127.0.0.1:{port}/corpus.txt"], r.stderr
    assert error.startswith("error: could not fetch corpus")
    assert "mirror/corpus.txt: sha256 mismatch" in error
    assert f"url http://127.0.0.1:{port}/corpus.txt: cannot connect" in error
    assert "Traceback" not in r.stderr
    raw = tmp_path / "data" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []
    assert r.stdout == ""


def test_stage_refuses_a_local_corpus_outside_data_corpora(tmp_path):
    """The download stage depends on data/corpora (dvc.yaml): a local file elsewhere would be
    tracked by its path only, so an edit in place would silently rerun nothing."""
    (tmp_path / "mine.txt").write_text("some text\n")
    write_params(tmp_path, "download:\n  corpus: mine.txt\n  mirrors: []\n")
    r = run_stage("download", tmp_path)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr == (
        "error: params.yaml: download.corpus: 'mine.txt' is not under data/corpora/, the only place "
        "where DVC tracks a local corpus by content (a file there, or a link to a file); copy or link it "
        "there (cp mine.txt data/corpora/mine.txt) and set download.corpus: data/corpora/mine.txt\n"
    )
    assert not (tmp_path / "data").exists()


def test_stage_param_errors_are_one_line(tmp_path):
    write_params(tmp_path, "download:\n  corpus: timemachin\n  mirrors: []\nclean:\n  mode: letters\n")
    r = run_stage("download", tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "download.corpus" in r.stderr and "did you mean 'timemachine'" in r.stderr
    r = run_stage("clean", tmp_path)  # nothing downloaded yet
    assert r.returncode == 1
    assert r.stderr.startswith("error: data/raw/corpus.txt: not found") and "Traceback" not in r.stderr


def test_binary_input_is_refused_even_when_it_decodes_as_utf8(tmp_path):
    """A .tar of the corpus is valid UTF-8 but full of NUL bytes: refuse it, naming the file."""
    raw = tmp_path / "corpus.txt"
    raw.write_bytes(b"tm.txt" + b"\x00" * 100 + b"ustar  root the time traveller")
    with pytest.raises(RnnlmError, match=r"corpus.txt: a binary file, not text \(NUL byte at offset 6\)"):
        run_clean(CLEAN_CFG, raw, tmp_path / "o.txt", tmp_path / "m.json")
    assert not (tmp_path / "o.txt").exists()


def test_letters_mode_refuses_to_throw_away_most_of_a_text():
    lyrics = "跨时代 Jay Chou\n" + "分开以后我的天空一片灰\n" * 50
    with pytest.raises(RnnlmError, match=r"clean.mode=letters keeps only .* use clean.mode lines or raw"):
        clean_text(lyrics, "letters")
    assert clean_text(lyrics, "lines").startswith("跨时代")


def test_presplit_raw_directory_is_cleaned_file_by_file(tmp_path):
    from rnnlm.clean import run_clean_dir

    raw, out = tmp_path / "raw", tmp_path / "clean"
    raw.mkdir()
    for name in ("train", "val", "test"):
        (raw / f"{name}.txt").write_text(f" {name} words \n second line \n")
    out.mkdir()
    (out / "corpus.txt").write_text("stale")
    m = run_clean_dir(CleanConfig(mode="raw", max_chars=0, strip_gutenberg=True), raw, out, tmp_path / "m.json")
    assert sorted(p.name for p in out.iterdir()) == ["source.json", "test.txt", "train.txt", "val.txt"]
    assert (out / "val.txt").read_text() == " val words \n second line \n"
    assert set(m["splits"]) == {"train", "val", "test"} and m["chars_out"] == sum(
        s["chars_out"] for s in m["splits"].values()
    )


@pytest.mark.parametrize(
    "encoding, bom, said",
    [
        (
            "utf-16",
            True,
            "UTF-16LE text, not UTF-8; convert it first, e.g. iconv -f UTF-16LE -t UTF-8 FILE > FILE.utf8",
        ),
        ("utf-16-be", False, "UTF-16BE (no byte-order mark) text, not UTF-8; convert it first, e.g. iconv -f UTF-16BE"),
        ("utf-32", True, "UTF-32LE text, not UTF-8; convert it first, e.g. iconv -f UTF-32LE"),
    ],
)
def test_a_utf16_or_utf32_file_is_named_as_such_with_how_to_convert(tmp_path, encoding, bom, said):
    """A UTF-16 text file was called "a binary file ... an archive must be a .zip"."""
    data = "The Time Traveller was expounding a recondite matter.\n".encode(encoding)
    raw = tmp_path / "corpus.txt"
    raw.write_bytes(data)
    assert data.startswith((b"\xff\xfe", b"\xfe\xff")) == bom
    with pytest.raises(RnnlmError, match=r"corpus\.txt: " + re.escape(said)):
        run_clean(CLEAN_CFG, raw, tmp_path / "o.txt", tmp_path / "m.json")
    assert not (tmp_path / "o.txt").exists()


def test_a_bad_split_file_is_named_by_where_it_came_from(tmp_path):
    """For a pre-split corpus the error named data/raw/val.txt; it names the user's file too."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "val.txt").write_bytes("held out\n".encode("utf-16"))
    (raw / "source.json").write_text(
        json.dumps(
            {
                "corpus": {},
                "kind": "splits",
                "splits": {"val": {"kind": "path", "source": "data/corpora/mine/valid.txt"}},
            }
        )
    )
    with pytest.raises(
        RnnlmError,
        match=r"^" + re.escape(f"{raw / 'val.txt'} (from data/corpora/mine/valid.txt): UTF-16LE text, not UTF-8"),
    ):
        clean_file(CLEAN_CFG, raw / "val.txt", tmp_path / "o.txt")


def test_letters_mode_warns_when_it_drops_the_letters_of_another_script(tmp_path):
    """A mixed text (Chinese and Latin lines) passed the text-share check with most of its
    distinct characters gone and exit 0: the stage now warns, naming how much and what."""
    from rnnlm.clean import letters_warning

    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    mixed = ("the time traveller smiled\n" * 3 + "分开以后我的天空一片灰\n") * 40
    (raw / "corpus.txt").write_text(mixed, encoding="utf-8")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"clean": {"mode": "letters", "max_chars": 0, "strip_gutenberg": True}})
    )
    r = run_stage_script("clean", tmp_path)
    assert r.returncode == 0, r.stderr
    chinese = 11 * 40
    assert r.stderr.strip().splitlines() == [
        f"warning: corpus: clean.mode=letters dropped {chinese} letters outside a-z ({chinese / len(mixed):.1%} of the "
        "text; 11 distinct, e.g. 一以分后天): use clean.mode lines or raw to keep them"
    ]
    english = {"chars_in": 1000, "letters_dropped": {"chars": 3, "distinct": 1, "examples": "é"}}
    assert letters_warning(english) is None  # a few accented letters in an English text: no warning
