"""Smoke test of bench/throughput.py: a tiny run, checking the report's structure (no timings)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(tmp_path):
    text = "The Time Machine, by H. G. Wells\n\n" + "The Time Traveller was expounding a recondite matter.\n" * 40
    path = tmp_path / "timemachine.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_d2l_clean_and_splits(bench, tmp_path):
    assert bench.d2l_clean("Hello, World!\n\n  The 2nd line  \n") == "hello world the nd line"
    V, train, val = bench.load_splits(_corpus(tmp_path))
    assert train.min() >= 0 and train.max() < V and len(val) > 0
    assert len(train) > 8 * len(val)


def test_quick_run_writes_the_report(bench, tmp_path):
    out = tmp_path / "bench.json"
    report = bench.main(
        [
            "--quick",
            "--no-memory",
            "--cells",
            "lstm",
            "gru",
            "--precisions",
            "fp32",
            "--data",
            str(_corpus(tmp_path)),
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = report["rows"]
    assert [(r["cell"], r["impl"], r["precision"]) for r in rows] == [
        ("lstm", "scratch", "fp32"),
        ("lstm", "torch", "fp32"),
        ("gru", "scratch", "fp32"),
        ("gru", "torch", "fp32"),
    ]
    for r in rows:
        assert r["project_tokens_per_s"] > 0 and r["reference_tokens_per_s"] > 0
        assert r["ratio"] > 0 and r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
        assert r["reference"].startswith("d2l")
    names = {t["target"] for t in report["targets"]}
    assert {
        "lstm_torch_vs_reference",
        "lstm_scratch_vs_reference",
        "gru_scratch_vs_reference",
        "scratch_lstm_vs_torch_lstm",
    } <= names
    assert all(t["met"] in (True, False) for t in report["targets"])
    assert report["scratch_lstm_vs_torch_lstm"] > 0
    assert [e["impl"] for e in report["eval"]] == ["scratch", "torch"]
    settings = report["settings"]
    assert settings["quick"] and settings["device"] == "cpu" and settings["threads"] >= 1
    assert {"steps", "repeats", "torch", "loadavg_before"} <= set(settings)


def test_memory_probe_reports_a_peak(bench, tmp_path):
    args = bench.parse_args(["--quick", "--device", "cpu", "--data", str(_corpus(tmp_path))])
    result = bench.memory_probe(args, "rnn", "scratch", "reference", "fp32")
    assert result["peak_mb"] >= 0 and result["method"]


@pytest.mark.parametrize("forced", ["this cpu", False])
def test_bf16_rows_for_the_torch_impl_where_the_device_has_bf16(bench, tmp_path, monkeypatch, forced):
    """Forced off, and as the CPU running the tests really is (a bf16 row runs only where oneDNN
    has native bfloat16: elsewhere its LSTM kernel fails)."""
    native = bench.bf16_native(bench.torch.device("cpu")) if forced == "this cpu" else False
    monkeypatch.setattr(bench, "bf16_native", lambda device: native)
    report = bench.main(
        [
            "--quick",
            "--no-memory",
            "--eval-tokens",
            "0",
            "--cells",
            "lstm",
            "--data",
            str(_corpus(tmp_path)),
            "--out",
            str(tmp_path / "bench.json"),
        ]
    )
    rows = [(r["impl"], r["precision"]) for r in report["rows"]]
    targets = {t["target"] for t in report["targets"]}
    if native:
        assert rows == [("scratch", "fp32"), ("torch", "fp32"), ("torch", "bf16")]
        bf16 = report["rows"][2]
        assert bf16["reference"] == report["rows"][1]["reference"]  # against the same fp32 reference
        assert bf16["reference_tokens_per_s"] == report["rows"][1]["reference_tokens_per_s"]
        assert {"lstm_torch_vs_reference", "lstm_torch_vs_reference (bf16)"} <= targets
        assert report["settings"]["precision_note"] is None
    else:
        assert rows == [("scratch", "fp32"), ("torch", "fp32")]
        assert "lstm_torch_vs_reference (bf16)" not in targets
        assert "no native bfloat16" in report["settings"]["precision_note"]


def test_busy_counts_the_runs_own_threads_only_after_it(bench):
    cores = bench.os.cpu_count() or 1
    spare = cores - bench.torch.get_num_threads()
    assert not bench.busy(None, None)
    assert not bench.busy([spare + 0.4] * 3, [cores + 0.4] * 3)  # the run's own load afterwards is fine
    assert bench.busy([spare + 0.6] * 3, None)  # something else ran before
    assert bench.busy(None, [cores + 0.6] * 3)  # more than all cores during the run


def test_word_level_bench_reports_every_config_against_the_full_softmax(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_word", ROOT / "bench" / "word_level.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "words.txt"
    data.write_text(" the cat sat on the mat \n a dog ran \n" * 300)
    out = tmp_path / "bench_word.json"
    report = module.main(
        [
            "--data",
            str(data),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--hidden",
            "8",
            "--batch-size",
            "2",
            "--num-steps",
            "5",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == report
    configs = [r["config"] for r in report["rows"]]
    assert configs[:3] == ["full, emb 32", "full, tied", "adaptive"] and report["rows"][0]["ratio_to_full"] == 1.0
    assert all(r["tokens_per_second"] > 0 for r in report["rows"])


def test_contention_bench_runs_each_setting_idle_then_beside_a_spinning_process(tmp_path, monkeypatch):
    """bench/contention.py's plumbing, with the training run replaced by a probe (no timings): a
    busy run has its spinners alive while it trains and none left after it; the slowdown is
    idle / busy; the settings reach the stage as threads and environment."""
    import multiprocessing

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_contention", ROOT / "bench" / "contention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = []

    def probe(model, steps, nproc, threads, env):
        alive = sum(p.is_alive() for p in multiprocessing.active_children())
        seen.append((threads, env.get("GOMP_SPINCOUNT"), alive))
        return {"tokens_per_second": 1000.0 / (1 + alive), "threads": threads or 7}

    monkeypatch.setattr(module, "run", probe)
    (tmp_path / "data" / "tokens").mkdir(parents=True)  # what the real runs would read
    monkeypatch.setattr(module, "ROOT", tmp_path)
    out = tmp_path / "contention.json"
    report = module.main(["--steps", "1", "--busy", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    cores = module.distributed.cores()
    assert seen == [(0, None, 0), (0, None, 1), (cores, "300000", 0), (cores, "300000", 1), (1, None, 0), (1, None, 1)]
    assert [r["setting"] for r in report["rows"]] == ["default", "before", "1 thread"]
    assert [(r["threads_idle"], r["threads_busy"]) for r in report["rows"]] == [(7, 7), (cores, cores), (1, 1)]
    assert all(r["slowdown"] == 2.0 for r in report["rows"])
    assert report["cpu_capability"] and not multiprocessing.active_children()


def test_equal_time_bench_trains_each_family_for_each_point(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_equal_time", ROOT / "bench" / "equal_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "equal.json"
    corpus = tmp_path / "big.txt"
    corpus.write_text(_corpus(tmp_path).read_text(encoding="utf-8") * 8, encoding="utf-8")  # 64 x 100 fits
    rows = module.main(["--points", "0.5", "1", "--threads", "1", "--data", str(corpus), "--out", str(out)])
    assert [(r["seconds"], r["model"]) for r in rows] == [
        (0.5, "lstm"),
        (0.5, "transformer"),
        (1.0, "lstm"),
        (1.0, "transformer"),
    ]
    for r in rows:
        assert (
            r["steps"] >= 1
            and 0 < r["heldout_nats"] < 10
            and r["heldout_ppl"] == pytest.approx(math.exp(r["heldout_nats"]))
        )
    report = json.loads(out.read_text())
    assert report["rows"] == json.loads(json.dumps(rows)) and "threads" in report["cpu"]
    assert "| best" in capsys.readouterr().out.replace("  ", "")
