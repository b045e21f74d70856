"""The evaluate stage's work: score every trained model and two count-based baselines on the
same held-out tokens, and write the metrics, the results table and two figures.

What is scored: for a split ``s`` (val or test) every model and baseline predicts the targets
``s[1:]``, each given all of its preceding tokens of the split (the models carry their hidden
state through the whole split, :func:`rnnlm.metrics.model_nll`; the n-gram baselines use up to
``order - 1`` preceding ids, with ``s[:1]`` as history). The targets are therefore identical
for every row of the table, and the perplexities are directly comparable.

Outputs (paths relative to the project root):

* ``metrics/eval.json`` -- DVC metrics, deterministic (no timings)::

      {"level": "char", "targets": {"val": n, "test": n},  # targets scored per split
       "models":    {"rnn": {"test": {"perplexity", "bits_per_token"}, "val": {"perplexity"}, "params"}, ...},
       "baselines": {"kneser-ney-5": {... same ...}, "unigram": {...}},
       "interpolated": {"rnn+kneser-ney-5": {... same ..., "weight": lam}, ...}}

  An interpolated row mixes a model with the Kneser-Ney baseline token by token,
  ``lam * p_model + (1 - lam) * p_kn``, with ``lam`` fitted on the val split alone (maximum
  likelihood, EM; Mikolov 2011), so its test perplexity is held-out like every other.

  ``bits_per_token`` is bits per character at char level and bits per word at word level.
  A baseline's ``params`` is the number of statistics it stores (n-gram counts + discounts).
* ``metrics/eval/results.{csv,md}`` (:mod:`rnnlm.results`), with training time, tokens/s and the
  best step from ``metrics/train/<model>/{metrics,timing}.json``; the two figures (``plot_*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoint import load_model, model_files
from .device import resolve_device
from .errors import ParamError, RnnlmError
from .fileio import read_stage_json, stage_output, write_json, write_text
from .metrics import bits_per_token, mixture_log_probs, mixture_weight, model_token_nll, perplexity
from .models import num_parameters
from .ngram import KneserNeyLM, UnigramLM
from .params import MODELS, EvaluateConfig
from .prepare import load_splits
from .results import DIGITS, markdown_table, results_table
from .vocab import Vocab

NUM_STEPS = 64  # time steps per chunk when walking a split (the result does not depend on it)
SCORED_SPLITS = ("val", "test")
MODEL_COLORS = {"rnn": "tab:blue", "lstm": "tab:orange", "gru": "tab:green"}
BASELINE_COLOR = "0.6"


def split_scores(nll_sum: float, count: int) -> dict:
    """{"perplexity", "bits_per_token"} of a total NLL (nats) over ``count`` targets."""
    if count <= 0:
        raise RnnlmError("nothing to score: a split needs at least 2 tokens")
    return {"perplexity": perplexity(nll_sum, count), "bits_per_token": bits_per_token(nll_sum, count)}


def _check_splits(splits: dict[str, np.ndarray]) -> None:
    for name in SCORED_SPLITS:
        if len(splits[name]) < 2:
            raise ParamError(
                "vocab.split", f"the {name} split has {len(splits[name])} token(s); at least 2 are needed to score it"
            )


def scores_of(log_probs: dict[str, np.ndarray]) -> dict[str, dict]:
    """{"val": scores, "test": scores} from per-target log-probabilities (kept as ``log_probs``)."""
    return {
        name: {**split_scores(-float(lp.sum()), len(lp)), "nll": -float(lp.sum()), "tokens": len(lp), "log_probs": lp}
        for name, lp in log_probs.items()
    }


def score_model(
    model, splits: dict[str, np.ndarray], batch_size: int, device="cpu", num_steps: int = NUM_STEPS
) -> dict[str, dict]:
    """{"val": scores, "test": scores} of a recurrent model (dropout off; exact with batch_size 1)."""
    return scores_of(
        {name: -model_token_nll(model, splits[name], batch_size, num_steps, device) for name in SCORED_SPLITS}
    )


def score_lm(lm, splits: dict[str, np.ndarray]) -> dict[str, dict]:
    """Same as :func:`score_model` for a count model with ``token_log_probs(tokens, history)``:
    targets ``split[1:]`` with history ``split[:1]``."""
    return scores_of(
        {
            name: lm.token_log_probs(np.asarray(splits[name])[1:], history=np.asarray(splits[name])[:1])
            for name in SCORED_SPLITS
        }
    )


def interpolate(model_scores: dict[str, dict], kn_scores: dict[str, dict]) -> tuple[float, dict[str, dict]]:
    """The mixture weight fitted on val, and the mixture's scores on val and test."""
    lam = mixture_weight(model_scores["val"]["log_probs"], kn_scores["val"]["log_probs"])
    return lam, scores_of(
        {
            name: mixture_log_probs(model_scores[name]["log_probs"], kn_scores[name]["log_probs"], lam)
            for name in SCORED_SPLITS
        }
    )


def kn_name(order: int) -> str:
    return f"kneser-ney-{order}"


def fit_baselines(train: np.ndarray, vocab_size: int, order: int) -> dict[str, tuple[object, dict]]:
    """{name: (fitted model, description)} for the Kneser-Ney and unigram baselines."""
    kn = KneserNeyLM(order, vocab_size).fit(train)
    uni = UnigramLM(vocab_size).fit(train)
    return {
        kn_name(order): (
            kn,
            {"impl": f"interpolated KN, order {order}", "params": sum(len(c) for c in kn.counts) + len(kn.discounts)},
        ),
        "unigram": (uni, {"impl": f"add-{uni.alpha:g} smoothing", "params": vocab_size}),
    }


# --- the train stage's outputs -------------------------------------------------------------
def read_training_info(train_dir: Path, model: str) -> dict:
    """train_seconds, tokens_per_second, precision, best_step from metrics/train/<model>/{timing,metrics}.json."""
    metrics = read_stage_json(train_dir / "metrics.json", f"train@{model}")
    timing = read_stage_json(train_dir / "timing.json", f"train@{model}")
    try:
        return {
            "train_seconds": float(timing["train_seconds"]),
            "tokens_per_second": float(timing["tokens_per_second"]),
            "precision": str(timing.get("precision", "fp32")),
            "best_step": int(metrics["best"]["step"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise RnnlmError(f"{train_dir}: training metrics lack {exc}; rerun `dvc repro train@{model}`") from None


def read_curve(path: Path, model: str) -> pd.DataFrame:
    """A DVCLive TSV of the train stage (columns step, perplexity: one row per validation point,
    step = optimizer steps so far) as columns step and perplexity."""
    try:
        df = pd.read_csv(stage_output(path, f"train@{model}"), sep="\t")
        return pd.DataFrame({"step": df["step"].astype(int), "perplexity": df["perplexity"].astype(float)})
    except (KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RnnlmError(f"{path}: not a step/perplexity TSV ({exc}); rerun `dvc repro train@{model}`") from None


# --- tables and figures ----------------------------------------------------------------------
def plot_learning_curves(curves: dict[str, dict[str, pd.DataFrame]], path: Path, level: str) -> None:
    """One figure: val (solid) and train (dashed) perplexity at each validation point, one colour per model."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, c) in enumerate(curves.items()):
        color = MODEL_COLORS.get(name, f"C{i}")
        ax.plot(
            c["val"]["step"],
            c["val"]["perplexity"],
            color=color,
            linestyle="-",
            marker="o",
            markersize=3,
            label=f"{name} val",
        )
        ax.plot(
            c["train"]["step"], c["train"]["perplexity"], color=color, linestyle="--", alpha=0.8, label=f"{name} train"
        )
    ax.set_yscale("log")  # ticks labelled 4, 5, 6 or 200, 300 (not 4x10^0): matplotlib picks which by the span
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"perplexity per {'character' if level == 'char' else 'word'} (log scale)")
    ax.set_title("Learning curves: solid = validation, dashed = training")
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(ncol=2, fontsize="small")
    save_figure(fig, path)


def plot_test_perplexity(df: pd.DataFrame, path: Path) -> None:
    """Bar chart of test perplexity in table order; baselines grey and hatched."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = np.arange(len(df))
    for i, row in enumerate(df.itertuples(index=False)):
        baseline, mixed = row.kind == "ngram", row.kind == "interpolated"
        model = row.name.split("+")[0]
        color = BASELINE_COLOR if baseline else MODEL_COLORS.get(model, f"C{i}")
        if not math.isfinite(row.test_perplexity):
            continue  # overflowed: shown in the table, no bar
        ax.bar(
            i,
            row.test_perplexity,
            color=color,
            edgecolor="black",
            linewidth=0.6,
            hatch="//" if baseline else ".." if mixed else None,
            alpha=0.55 if mixed else 1.0,
        )
        ax.annotate(
            f"{row.test_perplexity:.2f}",
            (i, row.test_perplexity),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize="small",
        )
    ax.set_xticks(x, list(df["name"]), rotation=30 if len(df) > 5 else 0, ha="right" if len(df) > 5 else "center")
    ax.set_ylabel("test perplexity (lower is better)")
    ax.set_title("Test perplexity: recurrent models vs n-gram baselines")
    fig.subplots_adjust(bottom=0.22)
    finite = df["test_perplexity"][np.isfinite(df["test_perplexity"])]
    ax.set_ylim(0, (float(finite.max()) if len(finite) else 1.0) * 1.12)
    ax.legend(
        handles=[
            Patch(facecolor="tab:blue", edgecolor="black", label="recurrent model"),
            Patch(
                facecolor="tab:blue",
                edgecolor="black",
                hatch="..",
                alpha=0.55,
                label="model + Kneser-Ney (weight fitted on val)",
            ),
            Patch(facecolor=BASELINE_COLOR, edgecolor="black", hatch="//", label="n-gram baseline"),
        ],
        fontsize="small",
    )
    ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, path)


# --- the stage ------------------------------------------------------------------------------
def _num(v: float) -> float | None:
    """Rounded for eval.json; an overflowed perplexity (inf) becomes null, which stays valid JSON."""
    return round(v, DIGITS) if math.isfinite(v) else None


def _rounded(scores: dict[str, dict], params: int) -> dict:
    return {
        "test": {
            "perplexity": _num(scores["test"]["perplexity"]),
            "bits_per_token": _num(scores["test"]["bits_per_token"]),
        },
        "val": {"perplexity": _num(scores["val"]["perplexity"])},
        "params": int(params),
    }


def _row(name: str, kind: str, impl: str, params: int, scores: dict, **extra) -> dict:
    row = {
        "name": name,
        "kind": kind,
        "impl": impl,
        "params": params,
        "train_perplexity": math.nan,
        "val_perplexity": scores["val"]["perplexity"],
        "test_perplexity": scores["test"]["perplexity"],
        "bits_per_token": scores["test"]["bits_per_token"],
        "train_seconds": math.nan,
        "tokens_per_second": math.nan,
        "best_step": pd.NA,
    }
    return {**row, **extra}


def _model_row(m: str, model, scores: dict, train_dir: Path) -> tuple[dict, dict]:
    """A trained model's table row and its learning curves."""
    info = read_training_info(train_dir, m)
    curves = {s: read_curve(train_dir / "plots" / "metrics" / s / "perplexity.tsv", m) for s in ("train", "val")}
    # training perplexity at the kept (best) validation point: the running average since the one before
    at_best = curves["train"].loc[curves["train"]["step"] == info["best_step"], "perplexity"]
    precision = info.pop("precision")
    impl = model.impl + ("" if precision == "fp32" else f" ({precision})")
    train_ppl = float(at_best.iloc[-1]) if len(at_best) else math.nan
    return _row(m, model.cell, impl, num_parameters(model), scores, train_perplexity=train_ppl, **info), curves


def _log_scores(log, name: str, scores: dict) -> None:
    log(f"evaluate: {name}: test perplexity {scores['test']['perplexity']:.3f}, val {scores['val']['perplexity']:.3f}")


def run_evaluate(
    cfg: EvaluateConfig, root: str | Path = ".", models: Sequence[str] = MODELS, log: Callable[[str], None] = print
) -> dict:
    """Score ``models``, the baselines and each model interpolated with Kneser-Ney; write every
    output under ``root``.

    Returns {"eval": the eval.json dict, "table": the results DataFrame, "markdown": results.md}.
    """
    root = Path(root)
    device = resolve_device(cfg.device, "evaluate.device")
    vocab = Vocab.load(root / "data" / "vocab.json")
    splits = load_splits(root / "data" / "tokens")
    _check_splits(splits)
    ckpts = model_files(root, models)

    rows, results, curves = [], {"models": {}, "baselines": {}, "interpolated": {}}, {}
    kn = kn_name(cfg.ngram_order)
    baseline_scores = {}
    for name, (lm, desc) in fit_baselines(splits["train"], len(vocab), cfg.ngram_order).items():
        baseline_scores[name] = scores = score_lm(lm, splits)
        results["baselines"][name] = _rounded(scores, desc["params"])
        rows.append(_row(name, "ngram", desc["impl"], desc["params"], scores))
        _log_scores(log, name, scores)

    for m in models:
        model, _ = load_model(ckpts[m], vocab.fingerprint, device, own=True)
        scores = score_model(model, splits, cfg.batch_size, device)
        row, curves[m] = _model_row(m, model, scores, root / "metrics" / "train" / m)
        del model
        results["models"][m] = _rounded(scores, row["params"])
        rows.append(row)
        _log_scores(log, m, scores)
        lam, mixed = interpolate(scores, baseline_scores[kn])
        params = row["params"] + results["baselines"][kn]["params"]
        results["interpolated"][f"{m}+{kn}"] = {**_rounded(mixed, params), "weight": round(lam, DIGITS)}
        rows.append(
            _row(f"{m}+{kn}", "interpolated", f"{lam:.2f} x {m} + {1 - lam:.2f} x KN-{cfg.ngram_order}", params, mixed)
        )
        _log_scores(log, f"{m}+{kn} (weight {lam:.3f})", mixed)

    eval_json = {"level": vocab.level, "targets": {s: int(len(splits[s]) - 1) for s in SCORED_SPLITS}, **results}
    table = results_table(rows, vocab.level)
    md = markdown_table(table)
    out = root / "metrics" / "eval"
    plot_learning_curves(curves, out / "learning_curves.png", vocab.level)
    plot_test_perplexity(table, out / "test_perplexity.png")
    write_text(out / "results.csv", table.to_csv(index=False))
    write_text(out / "results.md", md)
    write_json(root / "metrics" / "eval.json", eval_json)
    return {"eval": eval_json, "table": table, "markdown": md}
