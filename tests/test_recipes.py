"""Per-corpus recipes: overrides computed against the committed params, run by `dvc exp run`."""

import sys

import pytest
import yaml
from conftest import ROOT, make_project, ran_stages

from rnnlm.errors import RnnlmError
from rnnlm.params import validate_all
from rnnlm.recipes import available, flatten, hydra_value, load_recipe, overrides

CATALOG_RECIPES = ["jaychou", "ptb", "timemachine", "tinyshakespeare"]


def test_every_catalog_corpus_has_a_recipe_and_each_recipe_is_valid_params():
    assert available(ROOT / "recipes") == CATALOG_RECIPES
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in CATALOG_RECIPES:
        recipe = load_recipe(name, ROOT / "recipes")
        merged = {
            s: {**base.get(s, {}), **recipe.get(s, {})} if isinstance(base.get(s, {}), dict) else recipe.get(s, base[s])
            for s in {*base, *recipe}
        }
        validate_all(merged)  # unknown keys and sections, missing keys, bad values: the stages' own checks
        corpus = merged["download"]["corpus"]
        assert corpus == name, f"recipe {name} trains on {corpus}"


def test_overrides_reset_what_an_earlier_recipe_changed():
    base = {
        "download": {"corpus": "timemachine"},
        "vocab": {"level": "char", "split": [0.9, 0.05, 0.05]},
        "lstm": {"hidden": 256},
    }
    workspace_after_ptb = {
        "download": {"corpus": "ptb"},
        "vocab": {"level": "word", "split": [0.9, 0.05, 0.05]},
        "lstm": {"hidden": 256},
    }
    recipe = {"download": {"corpus": "jaychou"}, "lstm": {"hidden": 128}, "train": {"max_steps": 10}}
    assert overrides(recipe, base, workspace_after_ptb) == [
        "download.corpus=jaychou",
        "vocab.level=char",
        "lstm.hidden=128",
        "+train.max_steps=10",
    ]
    assert overrides({}, base, base) == []
    # a key an earlier recipe added (lstm.epochs is not in the committed params) is deleted
    after_ptb = {**base, "lstm": {"hidden": 256, "epochs": 10}}
    assert overrides({}, base, after_ptb) == ["~lstm.epochs"]


def test_values_are_written_in_the_override_grammar():
    assert hydra_value("it's") == "'it\\'s'" and hydra_value(True) == "true" and hydra_value(1e-3) == "0.001"
    assert hydra_value("ptb") == "ptb" and hydra_value("true") == "'true'" and hydra_value("../d") == "'../d'"
    assert hydra_value([0.9, 0.05]) == "[0.9,0.05]" and hydra_value({"train": "a b"}) == "{train:'a b'}"
    assert flatten({"download": {"corpus": {"train": "a"}}, "x": {"y": {"z": 1}}}) == {
        "download.corpus": {"train": "a"},
        "x.y.z": 1,
    }


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RnnlmError, match=r"unknown recipe 'ptbb' \(CORPUS\); choose one of jaychou, ptb"):
        load_recipe("ptbb", ROOT / "recipes")


@pytest.mark.integration
def test_recipe_runs_as_a_dvc_experiment_with_the_overrides_dvc_parses(tmp_path):
    """`python -m rnnlm.recipes NAME` in a project: DVC accepts every generated override (quoted
    strings, lists, a pre-split mapping) and params.yaml ends up as committed params + recipe."""
    proj = make_project(tmp_path / "proj", {"train": {"max_steps": 5}})  # the overrides matter here, not training
    recipe_dir = proj.path / "recipes"
    recipe_dir.mkdir()
    (recipe_dir / "tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "clean": {"mode": "lines"},
                "sample": {"prefixes": ["time's up", "the"]},
                "vocab": {"split": [0.8, 0.1, 0.1]},
                "lstm": {"hidden": 12, "epochs": 1},
            }
        )
    )
    proj.commit("a recipe")
    committed = proj.params()
    shown = proj.run(sys.executable, "-m", "rnnlm.recipes", "tiny", "--print").stdout.strip()
    assert shown.startswith("dvc exp run -S ")
    out = proj.run(sys.executable, "-m", "rnnlm.recipes", "tiny", "train@lstm")  # up to that stage
    assert sorted(ran_stages(out.stdout)) == ["clean", "code", "download", "train@lstm", "vocab"]
    params = proj.params()
    assert params["clean"]["mode"] == "lines" and params["sample"]["prefixes"] == ["time's up", "the"]
    assert params["vocab"]["split"] == [0.8, 0.1, 0.1] and params["lstm"]["hidden"] == 12
    assert params["lstm"]["epochs"] == 1 and params["rnn"] == committed["rnn"]
    again = proj.run(sys.executable, "-m", "rnnlm.recipes", "tiny", "--print", "train@gru").stdout.strip()
    assert again == "dvc exp run train@gru"  # the workspace already is that recipe
    assert "lstm.hidden" in proj.dvc("exp", "show", "--md").stdout
    # another recipe afterwards: what the first one added (lstm.epochs) is deleted, the rest reset
    (recipe_dir / "other.yaml").write_text(yaml.safe_dump({"rnn": {"hidden": 8}}))
    proj.run(sys.executable, "-m", "rnnlm.recipes", "other", "vocab")
    params = proj.params()
    assert "epochs" not in params["lstm"] and params["lstm"]["hidden"] == committed["lstm"]["hidden"]
    assert params["clean"]["mode"] == committed["clean"]["mode"] and params["rnn"]["hidden"] == 8


@pytest.mark.parametrize("name", ["../dvc", "../params", "ptb/../ptb", "-h", ".hidden"])
def test_a_recipe_name_is_a_plain_name(name):
    """recipes/../dvc.yaml exists, and is no recipe: only plain names are looked up."""
    with pytest.raises(RnnlmError, match=r"unknown recipe .* \(CORPUS\); choose one of jaychou, ptb"):
        load_recipe(name, ROOT / "recipes")


@pytest.mark.parametrize("corpus", ["x; touch {flag}", "x'; touch {flag}; echo '", "$(touch {flag})", "`touch {flag}`"])
def test_make_repro_passes_corpus_to_the_shell_as_one_word(tmp_path, corpus):
    """`make repro CORPUS=...` with shell syntax in the value runs no command of it: the recipe
    runner gets the value as its one argument and refuses it."""
    import subprocess

    flag = tmp_path / "INJECTED"
    run = subprocess.run(
        ["make", "-s", "-o", "setup", "repro", f"CORPUS={corpus.format(flag=flag)}", f"VENV={sys.prefix}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "unknown recipe" in run.stderr, run.stderr
    assert not flag.exists()


def test_uncommitted_params_edits_are_never_reset_silently():
    """A recipe's overrides would reset an uncommitted edit of params.yaml to its committed value:
    such edits are named, while what an earlier recipe run left in the workspace is not an edit."""
    from rnnlm.recipes import uncommitted_edits

    base = {"lstm": {"hidden": 256, "dropout": 0.3}, "sample": {"prefixes": []}, "clean": {"mode": "letters"}}
    jaychou = {"clean": {"mode": "lines"}, "lstm": {"dropout": 0.5, "epochs": 40}}
    recipes = [jaychou, {"clean": {"mode": "raw"}}]
    assert uncommitted_edits(base, base, recipes) == []
    after_jaychou = {
        "lstm": {"hidden": 256, "dropout": 0.5, "epochs": 40},
        "sample": {"prefixes": []},
        "clean": {"mode": "lines"},
    }
    assert uncommitted_edits(base, after_jaychou, recipes) == []
    edited = {"lstm": {"hidden": 512, "dropout": 0.3}, "sample": {"prefixes": ["the"]}, "clean": {"mode": "letters"}}
    assert uncommitted_edits(base, edited, recipes) == ["lstm.hidden", "sample.prefixes"]
    after_jaychou["lstm"]["hidden"] = 128  # an edit on top of an earlier recipe run
    assert uncommitted_edits(base, after_jaychou, recipes) == ["lstm.hidden"]


@pytest.mark.integration
def test_a_recipe_refuses_to_run_over_uncommitted_params_edits(tmp_path):
    proj = make_project(tmp_path / "proj")
    (proj.path / "recipes").mkdir()
    (proj.path / "recipes" / "tiny.yaml").write_text(yaml.safe_dump({"clean": {"mode": "lines"}}))
    proj.commit("a recipe")
    proj.set_params({"lstm": {"hidden": 24}, "sample": {"prefixes": ["the"]}})
    before = (proj.path / "params.yaml").read_text()
    run = proj.run(sys.executable, "-m", "rnnlm.recipes", "tiny", check=False)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "error: params.yaml has edits that are not committed (lstm.hidden, sample.prefixes), and the recipe would "
        "reset them to their committed values; commit them (git commit params.yaml) to run the recipe on top of "
        "them, or set them aside (git stash) and rerun"
    ]
    assert (proj.path / "params.yaml").read_text() == before  # the edits are still there
    proj.commit("my edits")
    proj.run(sys.executable, "-m", "rnnlm.recipes", "tiny", "--print")  # committed: runs on top of them


def test_a_recipe_refuses_to_start_beside_another_experiment(tmp_path):
    """Two experiments at once in one workspace mix their params (DVC's own race): a second recipe
    run, or one started while DVC holds its lock, stops with one error instead."""
    import fcntl

    from rnnlm.recipes import one_run_at_a_time

    with one_run_at_a_time(tmp_path):
        with pytest.raises(
            RnnlmError,
            match=r"^another recipe is running in this workspace; wait for it to end: two "
            r"experiments at once .* queue them \(dvc exp run --queue \.\.\., then "
            r"dvc queue start\)$",
        ):
            with one_run_at_a_time(tmp_path):
                pass
    with one_run_at_a_time(tmp_path):  # released after the run
        pass
    with open(tmp_path / ".dvc" / "tmp" / "lock", "w") as dvc_lock:  # what zc.lockfile (DVC's lock) holds
        fcntl.flock(dvc_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RnnlmError, match=r"^DVC is running in this workspace \(it holds \.dvc/tmp/lock\)"):
            with one_run_at_a_time(tmp_path):
                pass


TRICKY = [
    "a\\b",
    "x\\",
    "x\\\\",
    "it's",
    "it\\'s",
    "${x}",
    "\\${x}",
    "$x {y}",
    "a$",
    "${",
    "\\",
    "'",
    "''",
    "C:\\dir\\",
    "50% ${a.b} \\\\${c}",
    "tab\there",
    "é 分开",
    "back\\\\'quote",
]


def test_every_string_survives_dvc_set_param_unchanged(tmp_path):
    """A recipe restores committed values with `dvc exp run -S key=<hydra_value>`: DVC's own
    apply_overrides (Hydra's grammar, then OmegaConf's interpolation) must give back the exact
    string: backslashes are not doubled, and `${x}` is text, not an interpolation."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    for text in TRICKY:
        path.write_text(yaml.safe_dump({"sample": {"prefixes": ["old"], "note": "old"}}))
        apply_overrides(path, [f"sample.note={hydra_value(text)}", f"sample.prefixes={hydra_value([text, 'z'])}"])
        assert yaml.safe_load(path.read_text())["sample"] == {"prefixes": [text, "z"], "note": text}, text
