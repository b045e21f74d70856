"""Per-corpus recipes: ``make repro CORPUS=<name>`` runs ``recipes/<name>.yaml`` as a DVC experiment.

A recipe holds the params in which a corpus differs from the committed ``params.yaml``. It runs as
``dvc exp run -S key=value ...``, overriding every key where "committed params + recipe" differs from
the workspace, so nothing of an earlier recipe run is left behind.
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
_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a plain name: '../dvc' is no recipe
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a string Hydra reads as itself without quotes
_MISSING = object()
BUSY = (
    "wait for it to end: two experiments at once in one workspace mix their params (DVC runs each in "
    "the workspace); to run several, queue them (dvc exp run --queue ..., then dvc queue start)"
)


def available(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(recipes_dir).glob("*.yaml"))


def load_recipe(name: str, recipes_dir: Path = RECIPES_DIR) -> dict:
    path = Path(recipes_dir) / f"{name}.yaml"
    if not _RECIPE_NAME.fullmatch(name) or not path.is_file():
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


def hydra_value(value) -> str:
    """``value`` in the override grammar of DVC's ``-S`` (Hydra's); a string is quoted unless a plain name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if not isinstance(value, str):
        return json.dumps(value)
    if _PLAIN.fullmatch(value) and value.lower() not in ("true", "false", "null", "nan", "inf"):
        return value
    # Two layers read a quoted string: OmegaConf resolves ${...} (escaped as \${, with the
    # backslashes before it doubled), then Hydra, where only backslashes before a quote or the
    # closing quote are escapes (doubled there); every other backslash is kept as it is.
    value = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    value = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{value}'"


def overrides(recipe: dict, base: dict, workspace: dict) -> list[str]:
    """``-S`` overrides turning ``workspace`` into ``base`` + ``recipe``: '~key' deletes a key an
    earlier recipe added, '+key=v' adds a key the workspace lacks, 'key=v' changes a value."""
    target, current = {**flatten(base), **flatten(recipe)}, flatten(workspace)
    out = [f"~{key}" for key in current if key not in target]
    for key, value in target.items():
        if key not in current:
            out.append(f"+{key}={hydra_value(value)}")
        elif current[key] != value:
            out.append(f"{key}={hydra_value(value)}")
    return out


def uncommitted_edits(base: dict, workspace: dict, recipes: list[dict]) -> list[str]:
    """The keys of ``workspace`` that neither the committed params (``base``) nor a recipe run
    (``base`` + a recipe) explains: the user's own edits, which a recipe run would reset."""
    current, edits = flatten(workspace), []
    for recipe in [{}, *recipes]:
        state = {**flatten(base), **flatten(recipe)}
        keys = state.keys() | current.keys()
        edits.append(sorted(k for k in keys if state.get(k, _MISSING) != current.get(k, _MISSING)))
    return min(edits, key=len)


def command(name: str, targets: list[str] = ()) -> list[str]:
    """The ``dvc exp run`` command that runs recipe ``name`` (up to ``targets``) from params.yaml at HEAD."""
    recipe = load_recipe(name)
    try:
        git = subprocess.run(["git", "show", f"HEAD:{PARAMS_FILE}"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise RnnlmError(
            f"cannot read {PARAMS_FILE} at git HEAD: recipes run as DVC experiments inside a git repository "
            "with a commit"
        ) from None
    base, workspace = yaml.safe_load(git.stdout) or {}, read_params()
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


@contextlib.contextmanager
def one_run_at_a_time(root: Path = Path(".")):
    """Hold the workspace's recipe lock; refuse to start beside another recipe run or a running DVC."""
    tmp = root / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "rnnlm-recipe.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RnnlmError(f"another recipe is running in this workspace; {BUSY}") from None
        try:
            with open(tmp / "lock", "rb") as dvc_lock:
                fcntl.flock(dvc_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close
        except BlockingIOError:
            raise RnnlmError(f"DVC is running in this workspace (it holds .dvc/tmp/lock); {BUSY}") from None
        except OSError:  # no .dvc/tmp/lock: DVC is not running
            pass
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
