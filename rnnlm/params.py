"""params.yaml: loading, defaults and validation.

Each stage calls :func:`load_section` for the sections it reads. Values are checked for
type, range and allowed names; unknown keys are reported with the nearest valid name, so
``lstm.hiden: 512`` fails loudly instead of silently training the default size.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ParamError, RnnlmError

PARAMS_FILE = "params.yaml"
MODELS = ("rnn", "lstm", "gru")


@dataclass(frozen=True)
class Field:
    kind: str  # "int" | "float" | "str" | "bool" | "list[str]" | "list[int]" | "list[float]" | "corpus"
    default: Any
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    help: str = ""


def positive(v):
    return None if v > 0 else f"must be positive, got {v!r}"


def non_negative(v):
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def unit_interval_open(v):  # dropout-like: [0, 1)
    return None if 0 <= v < 1 else f"must be in [0, 1), got {v!r}"


def factor(v):  # lr decay factor: (0, 1]
    return None if 0 < v <= 1 else f"must be in (0, 1], got {v!r}"


def _split_check(v):
    if len(v) != 3:
        return f"must list three fractions [train, val, test], got {v!r}"
    if any(x < 0 for x in v):
        return f"fractions must not be negative, got {v!r}"
    if abs(sum(v) - 1) > 1e-6:
        return f"fractions must sum to 1 (the whole corpus is split), got {sum(v):g}: {v!r}"
    if any(x == 0 for x in v):
        return f"every split needs a positive fraction, got {v!r}"
    return None


def _cutoffs_check(v):
    if any(c <= 0 for c in v) or any(b <= a for a, b in zip(v, v[1:])):
        return f"must be positive and increasing, got {v!r}"
    return None


SPLIT_NAMES = ("train", "val", "test")


def _corpus_check(v):
    """``download.corpus``: one source (a string), or {train, val, test} sources, each a string or
    {source, sha256}."""
    if isinstance(v, str):
        return None
    if set(v) != set(SPLIT_NAMES):
        return f"a pre-split corpus names exactly train, val and test, got {sorted(v)}"
    for split, src in v.items():
        if isinstance(src, dict):
            extra = set(src) - {"source", "sha256"}
            if extra or not isinstance(src.get("source"), str) or not isinstance(src.get("sha256", ""), str):
                return (f"{split}: expected a path/URL or {{source: <path or URL>, sha256: <hex>}}, "
                        f"got {src!r}")
        elif not isinstance(src, str):
            return f"{split}: expected a path/URL or {{source, sha256}}, got {src!r}"
    return None


SCHEMA: dict[str, dict[str, Field]] = {
    "download": {
        "corpus": Field("corpus", "timemachine", check=_corpus_check,
                        help="catalog name, http(s) URL, local path, or {train, val, test} sources"),
        "sha256": Field("str", "", help="expected sha256 of a custom source (optional)"),
        "mirrors": Field("list[str]", ["../shared/data"], help="directories tried before the network"),
        "member": Field("str", "", help="the text member of a zip archive with several (\"\" = its only text file)"),
        "timeout": Field("float", 30.0, check=positive, help="network timeout in seconds"),
        "retries": Field("int", 3, check=non_negative, help="retries of transient network failures"),
    },
    "clean": {
        "mode": Field("str", "letters", choices=("letters", "lines", "raw")),
        "max_chars": Field("int", 0, check=non_negative, help="0 = keep all"),
        "strip_gutenberg": Field("bool", True),
    },
    "vocab": {
        "level": Field("str", "char", choices=("char", "word")),
        "min_freq": Field("int", 1, check=positive),
        "reserved": Field("list[str]", []),
        "split": Field("list[float]", [0.9, 0.05, 0.05], check=_split_check,
                       help="single-file corpora only; a pre-split corpus keeps its own files"),
        "tokenizer": Field("str", "regex", choices=("regex", "whitespace"),
                           help="word level: regex (words and punctuation marks) or whitespace (split only)"),
        "eos": Field("bool", False, help="word level: an <eos> token at every line end"),
    },
    "train": {
        "batch_size": Field("int", 32, check=positive),
        "num_steps": Field("int", 35, check=positive),
        "epochs": Field("int", 10, check=positive),
        "max_steps": Field("int", 0, check=non_negative, help="optimizer-step budget; 0 = epochs only"),
        "max_minutes": Field("float", 0.0, check=non_negative, help="wall-clock budget; 0 = none"),
        "eval_every": Field("int", 0, check=non_negative, help="validate every N steps; 0 = every epoch"),
        "optimizer": Field("str", "adam", choices=("sgd", "adam", "adamw")),
        "lr": Field("float", 0.002, check=positive),
        "weight_decay": Field("float", 0.0, check=non_negative),
        "clip_theta": Field("float", 1.0, check=non_negative, help="global grad-norm clip; 0 = off"),
        "sampling": Field("str", "sequential", choices=("random", "sequential")),
        "seed": Field("int", 0, check=non_negative),
        "device": Field("str", "auto", choices=("auto", "cpu", "cuda")),
        "threads": Field("int", 0, check=non_negative, help="torch CPU threads; 0 = torch default"),
        "precision": Field("str", "fp32", choices=("fp32", "bf16"),
                           help="bf16: mixed precision (autocast); weights, optimizer and evaluation stay fp32"),
        "patience": Field("int", 0, check=non_negative, help="early stopping; 0 = off"),
        "lr_decay": Field("float", 1.0, check=factor, help="lr factor on a val plateau; 1 = off"),
        "lr_schedule": Field("str", "plateau", choices=("plateau", "cosine"),
                             help="plateau: lr_decay when val stalls; cosine: lr to lr/10 over the epoch/step budget"),
    },
    "evaluate": {
        "ngram_order": Field("int", 5, check=positive),
        "batch_size": Field("int", 1, check=positive, help="parallel streams when scoring a split; 1 = exact"),
        "device": Field("str", "auto", choices=("auto", "cpu", "cuda")),
    },
    "sample": {
        "prefixes": Field("list[str]", []),
        "length": Field("int", 100, check=non_negative),
        "strategy": Field("str", "top_k", choices=("greedy", "temperature", "top_k")),
        "temperature": Field("float", 0.8, check=non_negative, help="0 = greedy (argmax)"),
        "top_k": Field("int", 5, check=positive),
        "seed": Field("int", 0, check=non_negative),
        "device": Field("str", "auto", choices=("auto", "cpu", "cuda")),
    },
}

MODEL_FIELDS: dict[str, Field] = {
    "impl": Field("str", "torch", choices=("scratch", "torch")),
    "hidden": Field("int", 256, check=positive),
    "layers": Field("int", 1, check=positive),
    "dropout": Field("float", 0.0, check=unit_interval_open),
    "embedding": Field("int", 32, check=non_negative, help="0 = one-hot inputs"),
    "tie_weights": Field("bool", False, help="decoder shares the embedding matrix (needs embedding == hidden)"),
    "softmax": Field("str", "full", choices=("full", "adaptive")),
    "cutoffs": Field("list[int]", [], check=_cutoffs_check, help="adaptive softmax cluster bounds; [] = automatic"),
}
for _m in MODELS:
    # A model section holds its own fields plus optional overrides of any `train` value.
    SCHEMA[_m] = {**MODEL_FIELDS, **{k: Field(f.kind, None, f.choices, f.check) for k, f in SCHEMA["train"].items()}}


def read_params(path: str | Path = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.exists():
        raise RnnlmError(f"{path}: not found (run from the project root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RnnlmError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RnnlmError(f"{path}: must be a mapping of sections")
    return data


def _coerce(key: str, f: Field, v: Any) -> Any:
    def bad(expected):
        return ParamError(key, f"expected {expected}, got {v!r}")

    if f.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("an integer")
    elif f.kind == "float":
        if isinstance(v, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                raise bad("a number") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad("a number")
        v = float(v)
        if not math.isfinite(v):
            raise bad("a finite number")
    elif f.kind == "str":
        if not isinstance(v, str):
            raise bad("a string")
    elif f.kind == "bool":
        if not isinstance(v, bool):
            raise bad("true or false")
    elif f.kind == "list[str]":
        if v is None:
            v = []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise bad("a list of strings")
    elif f.kind == "corpus":
        if not isinstance(v, (str, dict)):
            raise bad("a catalog name, URL or path, or a {train, val, test} mapping")
    elif f.kind == "list[int]":
        if v is None:
            v = []
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise bad("a list of integers")
    elif f.kind == "list[float]":
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise bad("a list of numbers")
        v = [float(x) for x in v]
    if f.choices and v not in f.choices:
        hint = difflib.get_close_matches(str(v), f.choices, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ParamError(key, f"unknown value {v!r}{did}; choose one of {', '.join(f.choices)}")
    if f.check is not None:
        problem = f.check(v)
        if problem:
            raise ParamError(key, problem)
    return v


def validate_section(name: str, raw: Any) -> dict:
    """Return section ``name`` with defaults filled in; raise ParamError on any problem."""
    if name not in SCHEMA:
        raise RnnlmError(f"unknown params section {name!r}")
    spec = SCHEMA[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamError(name, f"must be a mapping, got {raw!r}")
    for key in raw:
        if key not in spec:
            hint = difflib.get_close_matches(str(key), spec, n=1)
            did = f"; did you mean {name}.{hint[0]}?" if hint else ""
            raise ParamError(f"{name}.{key}", f"unknown key{did} (valid: {', '.join(spec)})")
    out = {}
    for key, f in spec.items():
        if key in raw and raw[key] is not None:
            out[key] = _coerce(f"{name}.{key}", f, raw[key])
        elif f.default is not None or f.kind.startswith("list"):
            out[key] = f.default if f.default is not None else []
    if name == "vocab" and out["level"] == "char":
        for key, bad in (("tokenizer", "whitespace"), ("eos", True)):
            if out[key] == bad:
                raise ParamError(f"vocab.{key}", f"{bad!r} is for vocab.level: word; the char level "
                                                 "keeps every character (newlines included)")
    if name in MODELS:
        if out.get("tie_weights") and out.get("embedding") != out.get("hidden"):
            raise ParamError(f"{name}.tie_weights", f"needs {name}.embedding == {name}.hidden "
                                                    f"(got {out.get('embedding')} and {out.get('hidden')})")
        if out.get("tie_weights") and out.get("softmax") == "adaptive":
            raise ParamError(f"{name}.tie_weights", "cannot be combined with softmax: adaptive; choose one")
    return out


def check_sections(params: dict, names) -> None:
    """Reject unknown top-level sections among ``params`` (typo guard for section names)."""
    for key in params:
        if key not in SCHEMA:
            hint = difflib.get_close_matches(str(key), SCHEMA, n=1)
            did = f"; did you mean {hint[0]}?" if hint else ""
            raise ParamError(str(key), f"unknown section{did}")


def validate_all(params: dict) -> dict:
    """Every section of ``params`` validated (unknown sections included), defaults filled in.

    The ``check-params`` stage runs this whenever anything in params.yaml changes, so a
    misspelled section that no other stage reads (``dvc exp run -S +lstn.hidden=12``) still fails.
    """
    check_sections(params, SCHEMA)
    return {name: validate_section(name, params.get(name)) for name in SCHEMA}


def load_section(name: str, path: str | Path = PARAMS_FILE, params: dict | None = None) -> dict:
    params = read_params(path) if params is None else params
    check_sections(params, SCHEMA)
    return validate_section(name, params.get(name))


def load_model_config(model: str, path: str | Path = PARAMS_FILE, params: dict | None = None) -> tuple[dict, dict]:
    """Return (model section, effective train config) for ``model``.

    Keys of the ``train`` section that also appear in the model section are overridden.
    """
    if model not in MODELS:
        hint = difflib.get_close_matches(model, MODELS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise RnnlmError(f"unknown model {model!r}{did}; choose one of {', '.join(MODELS)}")
    params = read_params(path) if params is None else params
    check_sections(params, SCHEMA)
    train = validate_section("train", params.get("train"))
    section = validate_section(model, params.get(model))
    model_cfg = {k: section[k] for k in MODEL_FIELDS}
    for k in SCHEMA["train"]:
        if k in section:
            train[k] = section[k]
    return model_cfg, train
