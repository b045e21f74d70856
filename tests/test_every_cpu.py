"""Every CPU class: each recipe's models train on a CPU without AVX-512 or native bfloat16.

Any x86 CPU with AVX-512 stands in for an AVX2-only one when the three libraries torch computes
with are capped: ATen's own kernels (ATEN_CPU_CAPABILITY), oneDNN's (ONEDNN_MAX_CPU_ISA: its LSTM,
and its answer to "native bfloat16?") and MKL's (MKL_ENABLE_INSTRUCTIONS: the matmuls). The child
process checks that the cap took before trusting what it ran."""

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, committed_params, deep_update, run_stage_script

from rnnlm.recipes import available, load_recipe

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

# In the child: every model section of every recipe (committed params.yaml + the recipe, as
# `make repro CORPUS=<name>` runs it) trains 2 steps at the recipe's sizes on random token ids,
# through the training stage's own Trainer and precision resolution.
CHILD = r"""
import dataclasses, json, sys, tempfile
from pathlib import Path
import numpy as np, torch
from rnnlm.device import bf16_native, cpu_capability
from rnnlm.params import MODELS, load_model_config
from rnnlm.train import Trainer, TrainPaths
from rnnlm.vocab import Vocab

torch.set_num_threads(1)
x = torch.randn(3, 2, 8)
torch.nn.LSTM(8, 8)(x)  # oneDNN says which ISA it dispatches to (ONEDNN_VERBOSE) on its first primitive
out = {"capability": cpu_capability(), "bf16": bf16_native(torch.device("cpu")), "runs": {}}
for recipe, params in json.loads(sys.argv[1]).items():
    level = params["vocab"]["level"]
    vocab = Vocab.build([f"w{i}" for i in range(9998)] if level == "word" else [chr(i) for i in range(32, 127)], level)
    rng = np.random.default_rng(0)
    for model in MODELS:
        model_cfg, cfg = load_model_config(model, params=params)
        cfg = dataclasses.replace(cfg, max_steps=2, eval_every=0, epochs=1, device="cpu", threads=1, nproc=1)
        train = rng.integers(0, len(vocab), 2 * cfg.batch_size * cfg.num_steps + 1)
        with tempfile.TemporaryDirectory() as tmp:
            result = Trainer(model, model_cfg, cfg, vocab, train, train[:200], TrainPaths.for_model(model, Path(tmp)),
                             progress=False, log=lambda *a: None).run()
        out["runs"][f"{recipe}/{model}"] = {"precision": result["precision"], "val": result["best_val_perplexity"],
                                            "width": getattr(model_cfg, "hidden", None) or model_cfg.d_model}
print("RESULT " + json.dumps(out))
"""


def recipe_params() -> dict:
    return {
        name: deep_update(copy.deepcopy(committed_params()), load_recipe(name, ROOT / "recipes"))
        for name in available(ROOT / "recipes")
    }


@pytest.mark.integration
def test_every_recipe_model_trains_on_an_avx2_cpu_in_fp32():
    """Fails where a recipe asks for what an AVX2 CPU cannot run (lstm.precision: bf16 did: oneDNN
    has no bf16 LSTM kernel there, a traceback at train@lstm)."""
    params = recipe_params()
    env = {**os.environ, **AVX2, "OMP_NUM_THREADS": "1", "ONEDNN_VERBOSE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(params)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    isa = [line for line in proc.stdout.splitlines() if ",isa:" in line]
    assert isa and not any(s in isa[0] for s in ("512", "AMX", "AVX 10")), isa  # oneDNN really capped
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["capability"] in ("AVX2", "DEFAULT") and result["bf16"] is False, result
    assert set(result["runs"]) == {f"{r}/{m}" for r in params for m in ("rnn", "lstm", "gru", "transformer")}
    for name, run in result["runs"].items():
        assert run["precision"] == "fp32" and 1 < run["val"] < float("inf"), (name, run)
    # the recipes' sizes really ran (e.g. tinyshakespeare's wider LSTM, ptb's wider Transformer)
    for model, key in (("lstm", "hidden"), ("transformer", "d_model")):
        sizes = {name: p[model][key] for name, p in params.items()}
        assert {n.split("/")[0]: r["width"] for n, r in result["runs"].items() if n.endswith(f"/{model}")} == sizes


@pytest.mark.integration
def test_explicit_bf16_on_an_avx2_cpu_is_one_error_line_and_writes_nothing(tmp_path):
    """`-S lstm.precision=bf16` on an AVX2 CPU: refused before any work (an empty directory with
    params.yaml is enough), naming the key it came from and the two precisions that run."""
    params = copy.deepcopy(committed_params())
    params["lstm"]["precision"] = "bf16"
    params["train"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = run_stage_script("train", tmp_path, env=AVX2, args=["lstm"])
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: params.yaml: lstm.precision: bf16 needs native bfloat16 matmuls (AVX512-BF16 or AMX CPUs, Ampere "
        "or newer GPUs), and this CPU (AVX2) has none; use auto (bf16 where the device has it, fp32 elsewhere) or fp32"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    "env, expected", [({}, "1000"), ({"GOMP_SPINCOUNT": "50"}, "50"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None)]
)
def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise(env, expected):
    """libgomp reads its spin count when torch loads: importing rnnlm first sets a short one."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, rnnlm, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == str(expected)
