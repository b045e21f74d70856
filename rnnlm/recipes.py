"""Per-corpus recipes: ``make repro CORPUS=<name>`` runs ``recipes/<name>.yaml`` as a DVC experiment.

A recipe is a partial params file: the keys in which that corpus's setup differs from the
committed ``params.yaml`` (the defaults, tuned on timemachine). Running it means
``dvc exp run -S key=value ...`` with one override for every key whose value in
"committed params.yaml + recipe" differs from the workspace's ``params.yaml``, so a recipe run
after another one leaves nothing of the first behind, and ``dvc exp show`` compares recipes as
experiments. ``python -m rnnlm.recipes ptb --print`` shows the command instead of running it;
``python -m rnnlm.recipes ptb train@lstm`` runs the pipeline only up to that stage (that
experiment keeps its parent's scores for the stages it did not run).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from .errors import RnnlmError, stage_main
from .params import PARAMS_FILE, read_params

RECIPES_DIR = Path("recipes")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def available(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(recipes_dir).glob("*.yaml"))


_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def load_recipe(name: str, recipes_dir: Path = RECIPES_DIR) -> dict:
    path = Path(recipes_dir) / f"{name}.yaml"
    if not _RECIPE_NAME.fullmatch(name) or not path.is_file():  # a plain name: '../dvc' is no recipe
        raise RnnlmError(f"unknown recipe {name!r} (CORPUS); choose one of {', '.join(available(recipes_dir))}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise RnnlmError(f"{path}: must be a mapping of params sections")
    return data


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and a pre-split ``download.corpus`` mapping stay whole."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted != "download.corpus":
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _quoted(text: str) -> str:
    """``text`` as a single-quoted string of the override grammar DVC's ``-S`` uses. Two layers
    read it: OmegaConf resolves ``${...}`` (escaped as ``\\${``, with the backslashes before it
    doubled), then Hydra's quoted strings, where only backslashes before a quote or the closing
    quote are escapes (doubled there); every other backslash is kept as it is."""
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    text = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{text}'"


def hydra_value(value) -> str:
    """A value in the override grammar DVC's ``-S`` uses (Hydra); strings are quoted unless they
    are plain names that Hydra cannot read as anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in ("true", "false", "null", "nan", "inf"):
            return value
        return _quoted(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def committed_params(path: str = PARAMS_FILE) -> dict:
    """params.yaml as committed at HEAD (the defaults every recipe starts from)."""
    try:
        text = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise RnnlmError(
            f"cannot read {path} at git HEAD: recipes run as DVC experiments inside a git repository with a commit"
        ) from None
    return yaml.safe_load(text) or {}


def _target(base: dict, recipe: dict) -> dict[str, object]:
    """Flattened params of "``base`` + ``recipe``"."""
    return {**flatten(base), **flatten(recipe)}


def overrides(recipe: dict, base: dict, workspace: dict) -> list[str]:
    """``-S`` overrides turning ``workspace`` into ``base`` + ``recipe``: '~key' deletes a key an
    earlier recipe added, '+key=v' adds a key the workspace lacks, 'key=v' changes a value."""
    target = _target(base, recipe)
    current = flatten(workspace)
    out = [f"~{key}" for key in current if key not in target]
    for key, value in target.items():
        if key not in current:
            out.append(f"+{key}={hydra_value(value)}")
        elif current[key] != value:
            out.append(f"{key}={hydra_value(value)}")
    return out


def uncommitted_edits(base: dict, workspace: dict, recipes: list[dict]) -> list[str]:
    """Keys of ``workspace`` that neither the committed params (``base``) nor the state an earlier
    recipe run left (``base`` + a recipe) explains: the user's own edits, which a recipe run would
    reset. A workspace that a recipe run left as it was has none."""
    current = flatten(workspace)
    edited = []
    for recipe in [{}, *recipes]:
        state = _target(base, recipe)
        diff = sorted(k for k in state.keys() | current.keys() if state.get(k, _MISSING) != current.get(k, _MISSING))
        if not diff:
            return []
        if not edited or len(diff) < len(edited):
            edited = diff
    return edited


_MISSING = object()


def command(name: str, targets: list[str] = ()) -> list[str]:
    recipe, base, workspace = load_recipe(name), committed_params(), read_params()
    edited = uncommitted_edits(base, workspace, [load_recipe(r) for r in available()])
    if edited:
        raise RnnlmError(
            f"params.yaml has edits that are not committed ({', '.join(edited)}), and the recipe would "
            "reset them to their committed values; commit them (git commit params.yaml) to run the "
            "recipe on top of them, or set them aside (git stash) and rerun"
        )
    args = ["dvc", "exp", "run"]
    for o in overrides(recipe, base, workspace):
        args += ["-S", o]
    return args + list(targets)


BUSY = (
    "wait for it to end: two experiments at once in one workspace mix their params (DVC runs each in "
    "the workspace); to run several, queue them (dvc exp run --queue ..., then dvc queue start)"
)


def _held(path: Path) -> bool:
    """Whether another process holds an flock on ``path`` (DVC's own .dvc/tmp/lock is one)."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:  # no such file: nobody holds it
        return False
    return False


@contextlib.contextmanager
def one_run_at_a_time(root: Path = Path(".")):
    """Hold the workspace's recipe lock while a recipe's experiment runs; refuse to start beside
    another recipe run or while DVC holds its lock."""
    tmp = root / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "rnnlm-recipe.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RnnlmError(f"another recipe is running in this workspace; {BUSY}") from None
        if _held(tmp / "lock"):
            raise RnnlmError(f"DVC is running in this workspace (it holds .dvc/tmp/lock); {BUSY}")
        yield


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rnnlm.recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"a recipe in {RECIPES_DIR}/")
    parser.add_argument("targets", nargs="*", help="stages to run up to (default: the whole pipeline)")
    parser.add_argument("--print", action="store_true", help="print the dvc exp run command instead of running it")
    args = parser.parse_intermixed_args()  # --print anywhere, also between the name and the targets
    cmd = command(args.name, args.targets)
    print(shlex.join(cmd), flush=True)
    if not args.print:
        with one_run_at_a_time():
            returncode = subprocess.run(cmd).returncode
        sys.exit(returncode)


if __name__ == "__main__":
    main()
