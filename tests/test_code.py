"""rnnlm.code: which modules a stage runs, and a hash that ignores comments and docstrings."""

from __future__ import annotations

import shutil
from pathlib import Path

from rnnlm.code import closure, source_hash, stage_fingerprints

ROOT = Path(__file__).resolve().parents[1]


def test_each_stage_covers_exactly_the_modules_it_imports():
    fps = stage_fingerprints(ROOT)
    assert set(fps) >= {"check_params", "download", "clean", "vocab", "train", "evaluate", "sample", "report"}
    names = {stage: {f.name for f in files[1:]} for stage, (_, files) in fps.items()}
    assert {"train.py", "models.py", "bptt.py", "batching.py"} <= names["train"]
    assert "ngram.py" not in names["train"] and "ngram.py" in names["evaluate"]
    assert names["report"] == {"__init__.py", "report.py", "results.py", "errors.py", "fileio.py", "paths.py"}
    assert "torch" not in "".join(names["report"])
    assert fps["train"][1][0] == ROOT / "stages" / "train.py"  # the script itself first


def test_comments_docstrings_and_formatting_do_not_change_the_hash_but_code_does(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('"""Doc."""\nimport math\n\n\ndef f(x):\n    """What f does."""\n    return math.sqrt(x)  # root\n')
    before = source_hash(src)
    src.write_text('"""Other doc."""\n# a comment\nimport math\n\ndef f( x ):\n    return math.sqrt(x)\n')
    assert source_hash(src) == before
    src.write_text('"""Doc."""\nimport math\n\n\ndef f(x):\n    return math.sqrt(x) + 0\n')
    assert source_hash(src) != before


def test_a_new_import_extends_the_closure(tmp_path):
    shutil.copytree(ROOT / "rnnlm", tmp_path / "rnnlm", ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "script.py"
    script.write_text("from rnnlm.errors import RnnlmError\n")
    assert [f.name for f in closure(script, tmp_path / "rnnlm")] == ["__init__.py", "errors.py"]
    script.write_text("from rnnlm import fileio\nimport rnnlm.errors\n")
    assert [f.name for f in closure(script, tmp_path / "rnnlm")] == ["__init__.py", "errors.py", "fileio.py"]


def test_dvc_yaml_and_rnnlm_paths_name_the_same_files():
    """Every path of rnnlm.paths is a dep or out of dvc.yaml (the resume checkpoints aside, which
    DVC does not track), and every dep and out of dvc.yaml lies under one of them (or is code)."""
    import yaml

    from rnnlm import paths

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    named = set()
    for stage in stages.values():
        stage = stage.get("do", stage)
        for entry in stage.get("deps", []) + stage.get("outs", []) + stage.get("metrics", []):
            named.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    named = {n.replace("${item}", "lstm") for n in named}
    ours = {name: p.as_posix() for name, p in vars(paths).items() if name.isupper()}
    assert {name for name, p in ours.items() if not any(n == p or n.startswith(p + "/") for n in named)} == {
        "CHECKPOINTS"
    }
    assert {
        n
        for n in named
        if n not in ("stages", "rnnlm") and not any(n == p or n.startswith(p + "/") for p in ours.values())
    } == set()
