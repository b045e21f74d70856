"""params.yaml: one typed, validated config object per section.

params.yaml is the one source of the defaults: it lists every key, and a key missing from it is
an error, not a value from somewhere else. Each stage builds the config objects of the sections
it reads once, at its start (:func:`load_section`, :func:`load_model_config`); every value is
checked for type, range and allowed names there, and the library trusts the objects it is given.
Unknown keys and sections are reported with the nearest valid name, so ``lstm.hiden: 512`` fails
loudly instead of silently training another size.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ParamError, RnnlmError, did_you_mean

PARAMS_FILE = "params.yaml"
MODELS = ("rnn", "lstm", "gru")  # the committed params.yaml's model sections (its `models` list)
CELLS = ("rnn", "lstm", "gru")
IMPLS = ("scratch", "torch")
BPTT = ("fused", "autograd")
MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # a model's name is a path part and a stage name part
SPLIT_NAMES = ("train", "val", "test")
DEVICES = ("auto", "cpu", "cuda", "mps")
STRATEGIES = ("greedy", "temperature", "top_k")


def spec(check: Callable[[Any], str | None] | None = None, choices: tuple = ()):
    """A config field's validation (params.yaml's comments say what each key means): ``check``
    returns a problem or None; ``choices`` are the allowed values."""
    return field(metadata={"check": check, "choices": choices})


def positive(v):
    return None if v > 0 else f"must be positive, got {v!r}"


def non_negative(v):
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def bounded(low, high):
    """A check for ``low <= v <= high`` (values past what the libraries take overflow there)."""

    def check(v):
        return None if low <= v <= high else f"must be in [{low:g}, {high:g}], got {v!r}"

    return check


SEED = bounded(0, 2**32 - 1)  # torch.manual_seed and numpy take it, with the epoch mixed in


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
                return f"{split}: expected a path/URL or {{source: <path or URL>, sha256: <hex>}}, got {src!r}"
        elif not isinstance(src, str):
            return f"{split}: expected a path/URL or {{source, sha256}}, got {src!r}"
    return None


# --------------------------------------------------------------------------- the sections
@dataclass(frozen=True)
class DownloadConfig:
    corpus: str | dict = spec(_corpus_check)
    sha256: str = spec()
    member: str = spec()
    mirrors: list[str] = spec()
    timeout: float = spec(lambda v: positive(v) or bounded(0, 3600)(v))  # seconds; an hour at most
    retries: int = spec(bounded(0, 100))


@dataclass(frozen=True)
class CleanConfig:
    mode: str = spec(choices=("letters", "lines", "raw"))
    max_chars: int = spec(non_negative)
    strip_gutenberg: bool = spec()


@dataclass(frozen=True)
class VocabConfig:
    level: str = spec(choices=("char", "word"))
    min_freq: int = spec(positive)
    reserved: list[str] = spec()
    split: list[float] = spec(_split_check)
    tokenizer: str = spec(choices=("regex", "whitespace"))
    eos: bool = spec()


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = spec(positive)
    num_steps: int = spec(positive)
    epochs: int = spec(positive)
    max_steps: int = spec(non_negative)
    max_minutes: float = spec(non_negative)
    eval_every: int = spec(non_negative)
    eval_tokens: int = spec(non_negative)
    optimizer: str = spec(choices=("sgd", "adam", "adamw"))
    lr: float = spec(positive)
    weight_decay: float = spec(non_negative)
    clip_theta: float = spec(non_negative)
    sampling: str = spec(choices=("random", "sequential"))
    seed: int = spec(SEED)
    device: str = spec(choices=DEVICES)
    threads: int = spec(non_negative)
    precision: str = spec(choices=("auto", "fp32", "bf16", "fp16"))
    nproc: int = spec(positive)
    backend: str = spec(choices=("auto", "gloo", "nccl"))
    patience: int = spec(non_negative)
    lr_decay: float = spec(factor)
    lr_schedule: str = spec(choices=("plateau", "cosine"))


@dataclass(frozen=True)
class ModelConfig:
    """A model section's own keys (its other keys override ``train`` values for that model)."""

    cell: str = spec(choices=CELLS)
    impl: str = spec(choices=IMPLS)
    hidden: int = spec(positive)
    layers: int = spec(positive)
    dropout: float = spec(unit_interval_open)
    embedding: int = spec(non_negative)
    tie_weights: bool = spec()
    softmax: str = spec(choices=("full", "adaptive"))
    cutoffs: list[int] = spec(_cutoffs_check)
    bptt: str = spec(choices=BPTT)


@dataclass(frozen=True)
class EvaluateConfig:
    ngram_order: int = spec(positive)
    batch_size: int = spec(positive)
    device: str = spec(choices=DEVICES)


@dataclass(frozen=True)
class SampleConfig:
    prefixes: list[str] = spec()
    length: int = spec(non_negative)
    strategy: str = spec(choices=STRATEGIES)
    temperature: float = spec(non_negative)
    top_k: int = spec(positive)
    seed: int = spec(SEED)
    device: str = spec(choices=DEVICES)


SCHEMA: dict[str, type] = {
    "download": DownloadConfig,
    "clean": CleanConfig,
    "vocab": VocabConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "sample": SampleConfig,
}  # and a ModelConfig section for each name in `models`


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


# --------------------------------------------------------------------------- checking values
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_float(v):
    if isinstance(v, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _typed(kind: str, v: Any) -> tuple[bool, Any]:
    """(ok, value converted to ``kind``)."""
    if kind == "int":
        return _is_int(v), v
    if kind == "float":
        x = _as_float(v)
        return x is not None, x
    if kind == "str":
        return isinstance(v, str), v
    if kind == "bool":
        return isinstance(v, bool), v
    if kind == "str | dict":
        return isinstance(v, (str, dict)), v
    v = [] if v is None else v
    if not isinstance(v, list):
        return False, v
    if kind == "list[str]":
        return all(isinstance(x, str) for x in v), v
    if kind == "list[int]":
        return all(_is_int(x) for x in v), v
    floats = [_as_float(x) for x in v]  # list[float]
    return None not in floats, floats


EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "str | dict": "a catalog name, URL or path, or a {train, val, test} mapping",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
}


def check_value(key: str, f: dataclasses.Field, v: Any) -> Any:
    """``v`` checked against field ``f`` (type, choices, range); ParamError naming ``key`` if wrong."""
    ok, v2 = _typed(f.type, v)
    if not ok:
        what = "a finite number" if f.type == "float" and isinstance(v, float) else EXPECTED[f.type]
        raise ParamError(key, f"expected {what}, got {v!r}")
    choices, check = f.metadata["choices"], f.metadata["check"]
    if choices and v2 not in choices:
        raise ParamError(key, f"unknown value {v2!r}{did_you_mean(v2, choices)}; choose one of {', '.join(choices)}")
    problem = check(v2) if check else None
    if problem:
        raise ParamError(key, problem)
    return v2


def _unknown(name: str, key: str, valid) -> ParamError:
    did = did_you_mean(key, valid, f"; did you mean {name}.{{}}?")
    return ParamError(f"{name}.{key}", f"unknown key{did} (valid: {', '.join(valid)})")


def _checked(name: str, raw: dict, required: dict, optional: dict | None = None) -> dict:
    """Every key of ``raw`` checked against the ``required`` (and ``optional``) fields."""
    spec_ = {**required, **(optional or {})}
    out = {}
    for key, v in raw.items():
        if key not in spec_:
            raise _unknown(name, key, spec_)
        if v is not None:
            out[key] = check_value(f"{name}.{key}", spec_[key], v)
    missing = [k for k in required if k not in out]
    if missing:
        where = f"{name}.{missing[0]}" if len(missing) == 1 else f"{name}: {', '.join(missing)}"
        raise ParamError(
            where, "missing: params.yaml sets every key (it holds the defaults; see the committed params.yaml)"
        )
    return out


def _section(name: str, raw: Any) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamError(name, f"must be a mapping, got {raw!r}")
    return raw


def _check_vocab(cfg: VocabConfig) -> None:
    if cfg.level == "char":
        for key, bad in (("tokenizer", "whitespace"), ("eos", True)):
            if getattr(cfg, key) == bad:
                raise ParamError(
                    f"vocab.{key}",
                    f"{bad!r} is for vocab.level: word; the char level keeps every character (newlines included)",
                )


def _check_model(name: str, m: ModelConfig) -> None:
    if m.tie_weights and m.embedding != m.hidden:
        raise ParamError(
            f"{name}.tie_weights", f"needs {name}.embedding == {name}.hidden (got {m.embedding} and {m.hidden})"
        )
    if m.tie_weights and m.softmax == "adaptive":
        raise ParamError(f"{name}.tie_weights", "cannot be combined with softmax: adaptive; choose one")
    if m.cutoffs and m.softmax != "adaptive":
        raise ParamError(
            f"{name}.cutoffs",
            f"{m.cutoffs} is unused: {name}.softmax is {m.softmax}, which has no "
            "clusters; set softmax: adaptive, or cutoffs: []",
        )


def _model_section(name: str, raw: dict) -> tuple[ModelConfig, dict]:
    """(the model's own config, its overrides of ``train`` values)."""
    own = fields_of(ModelConfig)
    values = _checked(name, raw, own, optional=fields_of(TrainConfig))
    model = ModelConfig(**{k: values[k] for k in own})
    _check_model(name, model)
    return model, {k: v for k, v in values.items() if k not in own}


def validate_models(raw: Any) -> tuple[str, ...]:
    """``models``: the model sections to train, evaluate and sample, by name."""
    if raw is None:
        return MODELS
    if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
        raise ParamError("models", f"expected a non-empty list of section names, got {raw!r}")
    for m in raw:
        if not MODEL_NAME.match(m) or m in SCHEMA or m == "models":
            raise ParamError(
                "models",
                f"{m!r} is not a model section name: use letters, digits and _ "
                f"(starting with a letter), and none of {', '.join(SCHEMA)}",
            )
    if len(set(raw)) < len(raw):
        raise ParamError("models", f"{raw} names a section twice")
    return tuple(raw)


def validate_section(name: str, raw: Any, models: tuple[str, ...] = MODELS):
    """Section ``name`` of params.yaml as its config object; ParamError on any problem.
    ``models``: the model section names (params.yaml's ``models``)."""
    if name not in SCHEMA and name not in models:
        raise RnnlmError(f"unknown params section {name!r}")
    raw = _section(name, raw)
    if name in models:
        return _model_section(name, raw)[0]
    cfg = SCHEMA[name](**_checked(name, raw, fields_of(SCHEMA[name])))
    if name == "vocab":
        _check_vocab(cfg)
    if name == "download":  # "timemachine " is timemachine for every stage that reads it
        cfg = dataclasses.replace(cfg, corpus=_stripped(cfg.corpus))
    return cfg


def _stripped(corpus):
    """download.corpus with the spaces around each name, path or URL removed."""
    if isinstance(corpus, str):
        return corpus.strip()
    return {k: {**v, "source": v["source"].strip()} if isinstance(v, dict) else v.strip() for k, v in corpus.items()}


# --------------------------------------------------------------------------- reading params.yaml
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


def check_sections(params: dict) -> tuple[str, ...]:
    """Reject unknown top-level sections among ``params`` (typo guard for section names); returns
    the model section names (``models``)."""
    models = validate_models(params.get("models"))
    known = [*SCHEMA, "models", *models, *unlisted_models(params, models)]
    for key in params:
        if key not in known:
            raise ParamError(str(key), f"unknown section{did_you_mean(key, known, '; did you mean {}?')}")
    return models


def _check_listed(params: dict, models: tuple[str, ...]) -> None:
    missing = [m for m in models if m not in params]
    if missing:
        raise ParamError("models", f"lists {missing[0]!r}, which has no section in params.yaml")


def unlisted_models(params: dict, models: tuple[str, ...]) -> list[str]:
    """Model sections (they name a cell) that ``models`` does not list: kept, checked, not trained."""
    return [
        k
        for k, v in params.items()
        if k not in models and k not in SCHEMA and k != "models" and isinstance(v, dict) and "cell" in v
    ]


def validate_all(params: dict) -> dict:
    """Every section of ``params`` validated, unknown sections included (the check-params stage)."""
    models = check_sections(params)
    _check_listed(params, models)
    models = (*models, *unlisted_models(params, models))
    # a model section's train overrides are checked here too, and dropped from its ModelConfig
    return {name: validate_section(name, params.get(name), models) for name in (*SCHEMA, *models)}


def load_section(name: str, path: str | Path = PARAMS_FILE, params: dict | None = None):
    params = read_params(path) if params is None else params
    return validate_section(name, params.get(name), check_sections(params))


def load_models(path: str | Path = PARAMS_FILE, params: dict | None = None) -> tuple[str, ...]:
    """The model section names of params.yaml (``models``), every section checked to exist."""
    params = read_params(path) if params is None else params
    models = check_sections(params)
    _check_listed(params, models)
    return models


def model_key(model: str, key: str, params: dict) -> str:
    """Where ``model``'s value of a train key comes from: ``<model>.<key>`` when its section sets
    it, else ``train.<key>`` (what an error message names)."""
    section = params.get(model)
    return f"{model}.{key}" if isinstance(section, dict) and key in section else f"train.{key}"


def load_model_config(
    model: str, path: str | Path = PARAMS_FILE, params: dict | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """(model section, effective train config) for ``model``: keys of ``train`` that also appear
    in the model section are overridden for that model."""
    params = read_params(path) if params is None else params
    models = check_sections(params)
    if model not in models:
        raise RnnlmError(
            f"unknown model {model!r}{did_you_mean(model, models)}; params.yaml's models: {', '.join(models)}"
        )
    train = validate_section("train", params.get("train"))
    model_cfg, overrides = _model_section(model, _section(model, params.get(model)))
    return model_cfg, dataclasses.replace(train, **overrides)
