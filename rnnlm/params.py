"""params.yaml: one typed, validated config object per section (its comments say what each key means).

params.yaml holds every default: a key missing there is an error. Each stage validates the sections it
reads once, at its start, and the library trusts the objects it is given. An unknown key or section is
reported with the nearest valid name, so ``lstm.hiden: 512`` fails instead of training another size.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ParamError, RnnlmError, did_you_mean

PARAMS_FILE = "params.yaml"
MODELS = ("rnn", "lstm", "gru", "transformer")  # the committed params.yaml's model sections (its `models` list)
CELLS = ("rnn", "lstm", "gru")  # the recurrent cells; a model section's cell is one of these or "transformer"
IMPLS = ("scratch", "torch")
BPTT = ("fused", "autograd")
SPLIT_NAMES = ("train", "val", "test")
DEVICES = ("auto", "cpu", "cuda", "mps")
STRATEGIES = ("greedy", "temperature", "top_k")
MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # a model's name is a path part and a stage name part


# --------------------------------------------------------------------------- value checks
def spec(rule: tuple | Callable[[Any], str | None]):
    """A field's check beyond its type: the allowed values (a tuple), or a function returning the problem or None."""
    return dataclasses.field(metadata={"rule": rule})


def must_be(says: str, ok: Callable[[Any], bool]) -> Callable[[Any], str | None]:
    return lambda v: None if ok(v) else f"must be {says}, got {v!r}"


def bounded(low, high):  # values past what torch and numpy take would overflow there
    return must_be(f"in [{low:g}, {high:g}]", lambda v: low <= v <= high)


positive = must_be("positive", lambda v: v > 0)
non_negative = must_be(">= 0", lambda v: v >= 0)
probability = must_be("in [0, 1)", lambda v: 0 <= v < 1)
factor = must_be("in (0, 1]", lambda v: 0 < v <= 1)
SEED = bounded(0, 2**32 - 1)  # torch.manual_seed and numpy take it, with the epoch mixed in


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
    """One source (a string), or {train, val, test} sources, each a string or {source, sha256}."""
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
    sha256: str
    member: str
    mirrors: list[str]
    timeout: float = spec(lambda v: positive(v) or bounded(0, 3600)(v))  # seconds; an hour at most
    retries: int = spec(bounded(0, 100))


@dataclass(frozen=True)
class CleanConfig:
    mode: str = spec(("letters", "lines", "raw"))
    max_chars: int = spec(non_negative)
    strip_gutenberg: bool


@dataclass(frozen=True)
class VocabConfig:
    level: str = spec(("char", "word"))
    min_freq: int = spec(positive)
    reserved: list[str]
    split: list[float] = spec(_split_check)
    tokenizer: str = spec(("regex", "whitespace"))
    eos: bool


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = spec(positive)
    num_steps: int = spec(positive)
    epochs: int = spec(positive)
    max_steps: int = spec(non_negative)
    max_minutes: float = spec(non_negative)
    eval_every: int = spec(non_negative)
    eval_tokens: int = spec(non_negative)
    optimizer: str = spec(("sgd", "adam", "adamw"))
    lr: float = spec(positive)
    weight_decay: float = spec(non_negative)
    clip_theta: float = spec(non_negative)
    sampling: str = spec(("random", "sequential"))
    seed: int = spec(SEED)
    device: str = spec(DEVICES)
    threads: int = spec(non_negative)
    precision: str = spec(("auto", "fp32", "bf16", "fp16"))
    nproc: int = spec(positive)
    backend: str = spec(("auto", "gloo", "nccl"))
    patience: int = spec(non_negative)
    lr_decay: float = spec(factor)
    lr_schedule: str = spec(("plateau", "cosine"))


@dataclass(frozen=True)
class ModelConfig:
    """A model section's own keys (its other keys override ``train`` values for that model)."""

    cell: str = spec((*CELLS, "transformer"))  # "transformer": a TransformerConfig section
    impl: str = spec(IMPLS)
    hidden: int = spec(positive)
    layers: int = spec(positive)
    dropout: float = spec(probability)
    embedding: int = spec(non_negative)
    tie_weights: bool
    softmax: str = spec(("full", "adaptive"))
    cutoffs: list[int] = spec(_cutoffs_check)
    bptt: str = spec(BPTT)
    weight_drop: float = spec(probability)  # DropConnect on the hidden-to-hidden weights (AWD-LSTM)
    embedding_dropout: float = spec(probability)  # drops whole token types from the embedding (AWD-LSTM)
    locked_dropout: bool  # dropout masks fixed along each sequence (variational dropout, AWD-LSTM)
    ar: float = spec(non_negative)  # activation regularisation: ar * mean(output^2) (AWD-LSTM)
    tar: float = spec(non_negative)  # temporal activation regularisation: tar * mean((h_t - h_{t-1})^2)


@dataclass(frozen=True)
class TransformerConfig:
    """A section with ``cell: transformer`` (rnnlm/transformer.py); its other keys override ``train``."""

    cell: str = spec(("transformer",))
    d_model: int = spec(positive)
    layers: int = spec(positive)
    heads: int = spec(positive)
    context: int = spec(must_be(">= 2", lambda v: v >= 2))  # tokens a window sees (learned positions)
    dropout: float = spec(probability)
    tie_weights: bool
    softmax: str = spec(("full", "adaptive"))
    cutoffs: list[int] = spec(_cutoffs_check)

    impl = "torch"  # not a key: what the results table shows


@dataclass(frozen=True)
class EvaluateConfig:
    ngram_order: int = spec(positive)
    batch_size: int = spec(positive)
    device: str = spec(DEVICES)
    # also score models with a neural cache / dynamic evaluation fitted on val (rnnlm/cache.py,
    # rnnlm/dynamic.py): true (every model), false, or the names of the models to score so
    cache: bool | list[str]
    dynamic: bool | list[str]

    def adaptive(self, kind: str, model: str) -> bool:
        """Whether ``model`` gets a row of ``kind`` ("cache" or "dynamic")."""
        setting = getattr(self, kind)
        return setting is True or (isinstance(setting, list) and model in setting)


@dataclass(frozen=True)
class SampleConfig:
    prefixes: list[str]
    length: int = spec(non_negative)
    strategy: str = spec(STRATEGIES)
    temperature: float = spec(non_negative)
    top_k: int = spec(positive)
    seed: int = spec(SEED)
    device: str = spec(DEVICES)


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


# --------------------------------------------------------------------------- checking a section
TYPES = {  # a field's annotation: (the Python types of its values, what an error says they are)
    "int": (int, "an integer"),
    "float": ((int, float), "a number"),
    "str": (str, "a string"),
    "bool": (bool, "true or false"),
    "str | dict": ((str, dict), "a catalog name, URL or path, or a {train, val, test} mapping"),
    "list[str]": (list, "a list of strings"),
    "list[int]": (list, "a list of integers"),
    "list[float]": (list, "a list of numbers"),
    "bool | list[str]": ((bool, list), "true, false or a list of model names"),
}


def _converted(kind: str, v: Any) -> Any:
    """``v`` as a value of annotation ``kind``, or None if it is not one."""
    if kind == "float" and isinstance(v, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            return None
    if kind == "bool | list[str]":
        return v if isinstance(v, bool) else _converted("list[str]", v) if isinstance(v, list) else None
    if not isinstance(v, TYPES[kind][0]) or (isinstance(v, bool) and kind != "bool"):
        return None
    if kind == "float":
        return float(v) if math.isfinite(v) else None
    if kind.startswith("list["):
        items = [_converted(kind[5:-1], x) for x in v]
        return None if None in items else items
    return v


def check_value(key: str, f: dataclasses.Field, v: Any) -> Any:
    """``v`` checked against field ``f`` (type, allowed values, range); ParamError naming ``key`` if wrong."""
    value = _converted(f.type, v)
    if value is None:
        what = "a finite number" if f.type == "float" and isinstance(v, float) else TYPES[f.type][1]
        raise ParamError(key, f"expected {what}, got {v!r}")
    rule = f.metadata.get("rule")
    if isinstance(rule, tuple) and value not in rule:
        raise ParamError(key, f"unknown value {value!r}{did_you_mean(value, rule)}; choose one of {', '.join(rule)}")
    problem = rule(value) if callable(rule) else None
    if problem:
        raise ParamError(key, problem)
    return value


def _checked(name: str, raw: Any, required: dict, optional: dict | None = None) -> dict:
    """Section ``name``'s values, each checked against its field; every ``required`` key must be set."""
    if raw is not None and not isinstance(raw, dict):
        raise ParamError(name, f"must be a mapping, got {raw!r}")
    allowed = {**required, **(optional or {})}
    out = {}
    for key, v in (raw or {}).items():
        if key not in allowed:
            did = did_you_mean(key, allowed, f"; did you mean {name}.{{}}?")
            raise ParamError(f"{name}.{key}", f"unknown key{did} (valid: {', '.join(allowed)})")
        if v is not None:
            out[key] = check_value(f"{name}.{key}", allowed[key], v)
    missing = [k for k in required if k not in out]
    if missing:
        where = f"{name}.{missing[0]}" if len(missing) == 1 else f"{name}: {', '.join(missing)}"
        raise ParamError(
            where, "missing: params.yaml sets every key (it holds the defaults; see the committed params.yaml)"
        )
    return out


def _model_section(name: str, raw: Any) -> tuple[ModelConfig | TransformerConfig, dict]:
    """(model ``name``'s own config, its overrides of ``train`` values), checked together."""
    transformer = isinstance(raw, dict) and raw.get("cell") == "transformer"
    cls = TransformerConfig if transformer else ModelConfig
    own = fields_of(cls)
    values = _checked(name, raw, own, optional=fields_of(TrainConfig))
    m = cls(**{k: values[k] for k in own})
    if transformer and m.d_model % m.heads:
        raise ParamError(f"{name}.heads", f"must divide {name}.d_model (got {m.heads} heads and d_model {m.d_model})")
    if not transformer and m.tie_weights and m.embedding != m.hidden:
        raise ParamError(
            f"{name}.tie_weights", f"needs {name}.embedding == {name}.hidden (got {m.embedding} and {m.hidden})"
        )
    if m.tie_weights and m.softmax == "adaptive":
        raise ParamError(f"{name}.tie_weights", "cannot be combined with softmax: adaptive; choose one")
    if not transformer and m.embedding_dropout and not m.embedding:
        raise ParamError(f"{name}.embedding_dropout", f"needs an embedding layer ({name}.embedding > 0)")
    if m.cutoffs and m.softmax != "adaptive":
        raise ParamError(
            f"{name}.cutoffs",
            f"{m.cutoffs} is unused: {name}.softmax is {m.softmax}, which has no "
            "clusters; set softmax: adaptive, or cutoffs: []",
        )
    return m, {k: v for k, v in values.items() if k not in own}


def validate_section(name: str, raw: Any, models: tuple[str, ...] = MODELS):
    """Section ``name`` of params.yaml as its config object (``models``: the model section names)."""
    if name in models:
        return _model_section(name, raw)[0]
    if name not in SCHEMA:
        raise RnnlmError(f"unknown params section {name!r}")
    cfg = SCHEMA[name](**_checked(name, raw, fields_of(SCHEMA[name])))
    if name == "vocab" and cfg.level == "char":
        for key, bad in (("tokenizer", "whitespace"), ("eos", True)):
            if getattr(cfg, key) == bad:
                raise ParamError(
                    f"vocab.{key}",
                    f"{bad!r} is for vocab.level: word; the char level keeps every character (newlines included)",
                )
    if name == "download":  # "timemachine " is timemachine for every stage that reads it
        cfg = dataclasses.replace(cfg, corpus=_stripped(cfg.corpus))
    return cfg


def _stripped(corpus):
    """download.corpus without the spaces around each name, path or URL."""
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
    """The model section names (``models``), checked, after rejecting unknown top-level sections (typos)."""
    models = params.get("models")
    if models is None:
        models = MODELS
    elif not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ParamError("models", f"expected a non-empty list of section names, got {models!r}")
    for m in models:
        if not MODEL_NAME.match(m) or m in SCHEMA or m == "models":
            raise ParamError(
                "models",
                f"{m!r} is not a model section name: use letters, digits and _ "
                f"(starting with a letter), and none of {', '.join(SCHEMA)}",
            )
    if len(set(models)) < len(models):
        raise ParamError("models", f"{models} names a section twice")
    known = [*SCHEMA, "models", *models, *unlisted_models(params, models)]
    for key in params:
        if key not in known:
            raise ParamError(str(key), f"unknown section{did_you_mean(key, known, '; did you mean {}?')}")
    return tuple(models)


def unlisted_models(params: dict, models: tuple[str, ...]) -> list[str]:
    """Model sections (they name a cell) that ``models`` does not list: kept, checked, not trained."""
    others = [k for k in params if k not in models and k not in SCHEMA and k != "models"]
    return [k for k in others if isinstance(params[k], dict) and "cell" in params[k]]


def load_models(path: str | Path = PARAMS_FILE, params: dict | None = None) -> tuple[str, ...]:
    """The model section names of params.yaml (``models``), every one checked to have a section."""
    params = read_params(path) if params is None else params
    models = check_sections(params)
    missing = [m for m in models if m not in params]
    if missing:
        raise ParamError("models", f"lists {missing[0]!r}, which has no section in params.yaml")
    return models


def validate_all(params: dict) -> dict:
    """Every section of ``params`` validated, unlisted model sections included (the check-params stage)."""
    models = load_models(params=params)
    models = (*models, *unlisted_models(params, models))
    out = {name: validate_section(name, params.get(name), models) for name in (*SCHEMA, *models)}
    check_adaptive_models(out["evaluate"], load_models(params=params))
    for name in models:
        load_model_config(name, params=params, models=models)  # each model with its train values
    return out


def check_adaptive_models(cfg: EvaluateConfig, models: tuple[str, ...]) -> None:
    """A list in ``evaluate.cache`` / ``evaluate.dynamic`` names only models that are trained."""
    for kind in ("cache", "dynamic"):
        listed = getattr(cfg, kind)
        for name in listed if isinstance(listed, list) else ():
            if name not in models:
                did = did_you_mean(name, models)
                raise ParamError(f"evaluate.{kind}", f"{name!r} is not in models ({', '.join(models)}){did}")


def load_section(name: str, path: str | Path = PARAMS_FILE, params: dict | None = None):
    params = read_params(path) if params is None else params
    return validate_section(name, params.get(name), check_sections(params))


def model_key(model: str, key: str, params: dict) -> str:
    """Where ``model``'s train value ``key`` is set, for an error to name: ``<model>.<key>`` or ``train.<key>``."""
    section = params.get(model)
    return f"{model}.{key}" if isinstance(section, dict) and key in section else f"train.{key}"


def load_model_config(
    model: str, path: str | Path = PARAMS_FILE, params: dict | None = None, models: tuple[str, ...] | None = None
) -> tuple[ModelConfig | TransformerConfig, TrainConfig]:
    """(model section, effective train config) for ``model``: its section's train keys override ``train``'s."""
    params = read_params(path) if params is None else params
    models = check_sections(params) if models is None else models
    if model not in models:
        raise RnnlmError(
            f"unknown model {model!r}{did_you_mean(model, models)}; params.yaml's models: {', '.join(models)}"
        )
    train = validate_section("train", params.get("train"))
    model_cfg, overrides = _model_section(model, params.get(model))
    train = dataclasses.replace(train, **overrides)
    if isinstance(model_cfg, TransformerConfig) and train.num_steps < model_cfg.context:
        raise ParamError(
            model_key(model, "num_steps", params),
            f"{train.num_steps} is shorter than {model}.context ({model_cfg.context}): training windows are "
            f"num_steps long, so positions past {train.num_steps} would never be trained; set "
            f"{model}.num_steps to at least {model_cfg.context} (or lower the context)",
        )
    return model_cfg, train
