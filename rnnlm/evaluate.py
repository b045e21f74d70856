"""The evaluate stage's work: score every trained model and two count-based baselines on the same
held-out tokens; write the metrics, the results table and two figures. No wall times (the report
joins in metrics/timing/), so an identical retrain changes nothing here.

Every row scores the same targets, so the perplexities are directly comparable: for a split ``s``
(val or test), each token of ``s[1:]`` given the tokens before it in ``s`` (a model carries its
hidden state through the split, :func:`rnnlm.metrics.model_token_nll`; an n-gram model sees up to
``order - 1`` of them). An interpolated row mixes a model with the Kneser-Ney baseline token by
token, ``lam * p_model + (1 - lam) * p_kn``, with ``lam`` fitted on val alone (maximum likelihood,
EM; Mikolov 2011): its test perplexity is as held-out as every other.

Outputs: ``metrics/eval/results.{csv,md}`` (:mod:`rnnlm.results`), ``learning_curves.png``,
``test_perplexity.png`` and the DVC metrics ``metrics/eval.json``::

    {"level": "char", "targets": {"val": n, "test": n},  # targets scored per split
     "models":    {"rnn": {"test": {"perplexity", "bits_per_token"}, "val": {"perplexity"}, "params"}, ...},
     "baselines": {"kneser-ney-5": {... same ...}, "unigram": {...}},
      "interpolated": {"rnn+kneser-ney-5": {... same ..., "weight": lam}, ...},
     "cache": {"rnn+cache": {... same ..., "window": W, "theta": theta, "weight": lam}, ...},
     "dynamic": {"rnn+dynamic": {... same ..., "eta": eta, "decay": decay}, ...}}

A cache row (``evaluate.cache``) mixes a model with a neural cache over its own recent outputs
(:mod:`rnnlm.cache`); a dynamic row (``evaluate.dynamic``) lets the model take gradient steps on
the text it has scored (:mod:`rnnlm.dynamic`); each key is true (every model), false, or a list
of the models to score so. Their settings are fitted on val alone, and both
read the text left to right: no token is scored after anything learned from it. Both score one
exact stream whatever ``evaluate.batch_size`` (1, the default, scores the model row the same way).

``bits_per_token`` is per character or per word, after the vocabulary's level; a baseline's
``params`` counts the statistics it stores (n-gram counts + discounts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import cache, dynamic, paths
from .checkpoint import load_model, model_files
from .device import resolve_device
from .errors import ParamError, RnnlmError
from .fileio import read_stage_json, stage_output, write_json, write_text
from .metrics import bits_per_token, mixture_log_probs, mixture_weight, model_token_nll, perplexity
from .models import num_parameters
from .ngram import KneserNeyLM, UnigramLM
from .params import MODELS, EvaluateConfig, check_adaptive_models
from .results import DIGITS, markdown_table, results_table
from .vocab import Vocab, load_splits

NUM_STEPS = 64  # time steps per chunk when walking a split (the result does not depend on it)
SCORED_SPLITS = ("val", "test")
MODEL_COLORS = {"rnn": "tab:blue", "lstm": "tab:orange", "gru": "tab:green", "transformer": "tab:purple"}
BASELINE_COLOR = "0.6"
BAR_STYLES = {
    "ngram": {"hatch": "//"},
    "interpolated": {"hatch": "..", "alpha": 0.55},
    "cache": {"hatch": "xx"},
    "dynamic": {"hatch": "++"},
}


def split_scores(nll_sum: float, count: int) -> dict:
    """{"perplexity", "bits_per_token"} of a total NLL (nats) over ``count`` targets."""
    if count <= 0:
        raise RnnlmError("nothing to score: a split needs at least 2 tokens")
    return {"perplexity": perplexity(nll_sum, count), "bits_per_token": bits_per_token(nll_sum, count)}


def _check_splits(splits: dict[str, np.ndarray]) -> None:
    for name in SCORED_SPLITS:
        if (n := len(splits[name])) < 2:
            raise ParamError("vocab.split", f"the {name} split has {n} token(s); at least 2 are needed to score it")


def _scores(log_probs: np.ndarray) -> dict:
    """:func:`split_scores` of per-target log-probabilities, with their count and themselves."""
    nll = -float(log_probs.sum())
    return {**split_scores(nll, len(log_probs)), "tokens": len(log_probs), "log_probs": log_probs}


def score_model(model, splits: dict[str, np.ndarray], batch_size: int, device="cpu", num_steps: int = NUM_STEPS):
    """{"val": scores, "test": scores} of a neural model (dropout off; exact with batch_size 1)."""
    return {s: _scores(-model_token_nll(model, splits[s], batch_size, num_steps, device)) for s in SCORED_SPLITS}


def score_lm(lm, splits: dict[str, np.ndarray]) -> dict[str, dict]:
    """The same for an n-gram model: the targets ``split[1:]``, with ``split[:1]`` as history."""
    return {s: _scores(lm.token_log_probs(splits[s][1:], history=splits[s][:1])) for s in SCORED_SPLITS}


def interpolate(model_scores: dict[str, dict], kn_scores: dict[str, dict]) -> tuple[float, dict[str, dict]]:
    """The mixture weight fitted on val, and the mixture's val and test scores."""
    lam = mixture_weight(model_scores["val"]["log_probs"], kn_scores["val"]["log_probs"])
    mixed = {s: mixture_log_probs(model_scores[s]["log_probs"], kn_scores[s]["log_probs"], lam) for s in SCORED_SPLITS}
    return lam, {s: _scores(lp) for s, lp in mixed.items()}


def fit_baselines(train: np.ndarray, vocab_size: int, order: int) -> dict[str, tuple[object, dict]]:
    """{name: (fitted model, {"impl", "params"})} for the Kneser-Ney and unigram baselines."""
    kn = KneserNeyLM(order, vocab_size).fit(train)
    uni = UnigramLM(vocab_size).fit(train)
    kn_params = sum(len(c) for c in kn.counts) + len(kn.discounts)
    return {
        f"kneser-ney-{order}": (kn, {"impl": f"interpolated KN, order {order}", "params": kn_params}),
        "unigram": (uni, {"impl": f"add-{uni.alpha:g} smoothing", "params": vocab_size}),
    }


def read_training(train_dir: Path, model: str) -> tuple[int, float, dict[str, pd.DataFrame]]:
    """From metrics/train/<model>/: the best validation point's step, the training perplexity there
    (the average since the point before) and the learning curves {"train", "val"} (step, perplexity)."""
    metrics = read_stage_json(train_dir / "metrics.json", f"train@{model}")
    try:
        best_step = int(metrics["best"]["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RnnlmError(f"{train_dir}: training metrics lack {exc}; rerun `dvc repro train@{model}`") from None
    curves = {}
    for split in ("train", "val"):
        path = train_dir / "plots" / "metrics" / split / "perplexity.tsv"
        try:
            df = pd.read_csv(stage_output(path, f"train@{model}"), sep="\t")
            curves[split] = pd.DataFrame({"step": df["step"].astype(int), "perplexity": df["perplexity"].astype(float)})
        except (KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise RnnlmError(f"{path}: not a step/perplexity TSV ({exc}); rerun `dvc repro train@{model}`") from None
    at_best = curves["train"].loc[curves["train"]["step"] == best_step, "perplexity"]
    return best_step, float(at_best.iloc[-1]) if len(at_best) else math.nan, curves


def plot_learning_curves(curves: dict[str, dict[str, pd.DataFrame]], path: Path, level: str) -> None:
    """Val (solid) and train (dashed) perplexity at each validation point, one colour per model."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, c) in enumerate(curves.items()):
        color = MODEL_COLORS.get(name, f"C{i}")
        ax.plot(c["val"]["step"], c["val"]["perplexity"], "o-", color=color, markersize=3, label=f"{name} val")
        ax.plot(c["train"]["step"], c["train"]["perplexity"], "--", color=color, alpha=0.8, label=f"{name} train")
    ax.set_yscale("log")  # ticks labelled 4, 5, 6 or 200, 300 (not 4x10^0): matplotlib picks which by the span
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set(xlabel="optimizer step", ylabel=f"perplexity per {'character' if level == 'char' else 'word'} (log scale)")
    ax.set_title("Learning curves: solid = validation, dashed = training")
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(ncol=2, fontsize="small")
    save_figure(fig, path)


def plot_test_perplexity(df: pd.DataFrame, path: Path) -> None:
    """Test perplexity in table order: one bar per row, mixtures dotted, baselines grey and hatched."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, row in enumerate(df.itertuples(index=False)):
        ppl = row.test_perplexity
        if not math.isfinite(ppl):
            continue  # overflowed: in the table, no bar
        color = BASELINE_COLOR if row.kind == "ngram" else MODEL_COLORS.get(row.name.split("+")[0], f"C{i}")
        ax.bar(i, ppl, color=color, edgecolor="black", linewidth=0.6, **BAR_STYLES.get(row.kind, {}))
        ax.annotate(f"{ppl:.2f}", (i, ppl), textcoords="offset points", xytext=(0, 3), ha="center", fontsize="small")
    tilted = len(df) > 5
    ax.set_xticks(range(len(df)), list(df["name"]), rotation=30 if tilted else 0, ha="right" if tilted else "center")
    ax.set(ylabel="test perplexity (lower is better)", title="Test perplexity: neural models vs n-gram baselines")
    fig.subplots_adjust(bottom=0.22)
    finite = df["test_perplexity"][np.isfinite(df["test_perplexity"])]
    ax.set_ylim(0, (float(finite.max()) if len(finite) else 1.0) * 1.12)
    mixture = "model + Kneser-Ney (weight fitted on val)"
    handles = [
        Patch(facecolor="tab:blue", edgecolor="black", label="neural model"),
        Patch(facecolor="tab:blue", edgecolor="black", label=mixture, **BAR_STYLES["interpolated"]),
        Patch(facecolor=BASELINE_COLOR, edgecolor="black", label="n-gram baseline", **BAR_STYLES["ngram"]),
    ]
    if "cache" in set(df["kind"]):
        handles.insert(2, Patch(facecolor="tab:blue", edgecolor="black", label="model + cache", **BAR_STYLES["cache"]))
    if "dynamic" in set(df["kind"]):
        handles.insert(
            -1, Patch(facecolor="tab:blue", edgecolor="black", label="dynamic evaluation", **BAR_STYLES["dynamic"])
        )
    ax.legend(handles=handles, fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, path)


def cache_scores(model, splits: dict[str, np.ndarray], device="cpu") -> tuple[dict, dict[str, dict]]:
    """The neural cache fitted on val ({"window", "theta", "weight"}), and the model + cache's
    scores on val and test."""
    model_lp, grid_lp = cache.log_probs(model, splits["val"], cache.GRID, device)
    fitted = cache.fit(model_lp, grid_lp)
    chosen = (fitted["window"], fitted["theta"])
    scores = {"val": _scores(cache.mix(model_lp, grid_lp[cache.GRID.index(chosen)], fitted["weight"]))}
    model_lp, cache_lp = cache.log_probs(model, splits["test"], [chosen], device)
    scores["test"] = _scores(cache.mix(model_lp, cache_lp[0], fitted["weight"]))
    return fitted, scores


def dynamic_scores(model, splits: dict[str, np.ndarray], device="cpu") -> tuple[dict, dict[str, dict]]:
    """Dynamic evaluation's settings fitted on val ({"eta", "decay"}), and its scores on val and test."""
    ms = dynamic.mean_squared_grads(model, splits["train"], device)
    fitted, val_lp = dynamic.fit(model, splits["val"], ms, device)
    test_lp = dynamic.log_probs(model, splits["test"], ms, **fitted, device=device)
    return fitted, {"val": _scores(val_lp), "test": _scores(test_lp)}


def adaptive_rows(model, row: dict, splits: dict[str, np.ndarray], cfg: EvaluateConfig, device) -> list:
    """The model's cache and dynamic-evaluation rows, as ``cfg`` switches them on: (group, row, fitted)."""
    out = []
    if cfg.adaptive("cache", row["name"]):
        fitted, scores = cache_scores(model, splits, device)
        impl = f"cache W={fitted['window']}, theta={fitted['theta']:g}, {fitted['weight']:.2f} x cache"
        out.append(("cache", _row(f"{row['name']}+cache", "cache", impl, row["params"], scores), fitted))
    if cfg.adaptive("dynamic", row["name"]):
        fitted, scores = dynamic_scores(model, splits, device)
        impl = f"dynamic eval, eta={fitted['eta']:g}, decay={fitted['decay']:g}"
        out.append(("dynamic", _row(f"{row['name']}+dynamic", "dynamic", impl, row["params"], scores), fitted))
    return out


def _row(name: str, kind: str, impl: str, params: int, scores: dict, train_perplexity=math.nan, best_step=pd.NA):
    """A row of :func:`rnnlm.results.results_table`."""
    return {
        "name": name,
        "kind": kind,
        "impl": impl,
        "params": params,
        "train_perplexity": train_perplexity,
        "val_perplexity": scores["val"]["perplexity"],
        "test_perplexity": scores["test"]["perplexity"],
        "bits_per_token": scores["test"]["bits_per_token"],
        "best_step": best_step,
    }


def _num(v: float) -> float | None:
    """Rounded for eval.json; an overflowed perplexity (inf) becomes null, which stays valid JSON."""
    return round(v, DIGITS) if math.isfinite(v) else None


def run_evaluate(
    cfg: EvaluateConfig, root: str | Path = ".", models: Sequence[str] = MODELS, log: Callable[[str], None] = print
) -> dict:
    """Score ``models``, the baselines and each model interpolated with Kneser-Ney; write every
    output under ``root``. Returns {"eval": eval.json's dict, "table": the results DataFrame,
    "markdown": results.md}."""
    root = Path(root)
    check_adaptive_models(cfg, tuple(models))
    device = resolve_device(cfg.device, "evaluate.device")
    vocab = Vocab.load(root / paths.VOCAB)
    splits = load_splits(root / paths.TOKENS)
    _check_splits(splits)
    ckpts = model_files(root, models)
    kn = f"kneser-ney-{cfg.ngram_order}"
    groups = {"models": {}, "baselines": {}, "interpolated": {}}
    groups.update({g: {} for g in ("cache", "dynamic") if any(cfg.adaptive(g, m) for m in models)})
    rows, curves, baseline_scores = [], {}, {}

    def add(group: str, row: dict, label: str = "", **entry) -> None:
        """Put ``row`` into the table and into eval.json (rounded, with ``entry``); log it."""
        groups[group][row["name"]] = {
            "test": {"perplexity": _num(row["test_perplexity"]), "bits_per_token": _num(row["bits_per_token"])},
            "val": {"perplexity": _num(row["val_perplexity"])},
            "params": int(row["params"]),
            **entry,
        }
        rows.append(row)
        ppl = f"test perplexity {row['test_perplexity']:.3f}, val {row['val_perplexity']:.3f}"
        log(f"evaluate: {label or row['name']}: {ppl}")

    for name, (lm, desc) in fit_baselines(splits["train"], len(vocab), cfg.ngram_order).items():
        baseline_scores[name] = score_lm(lm, splits)
        add("baselines", _row(name, "ngram", desc["impl"], desc["params"], baseline_scores[name]))
    for m in models:
        model, ckpt = load_model(ckpts[m], vocab.fingerprint, device, own=True)
        scores = score_model(model, splits, cfg.batch_size, device)
        precision = str(ckpt.get("precision", "fp32"))  # the precision it was trained in
        impl = model.impl + ("" if precision == "fp32" else f" ({precision})")
        best_step, train_ppl, curves[m] = read_training(root / paths.TRAIN_METRICS / m, m)
        row = _row(m, model.cell, impl, num_parameters(model), scores, train_perplexity=train_ppl, best_step=best_step)
        add("models", row)
        for group, adaptive_row, fitted in adaptive_rows(model, row, splits, cfg, device):
            add(group, adaptive_row, **fitted)
        del model, ckpt
        lam, mixed = interpolate(scores, baseline_scores[kn])
        impl = f"{lam:.2f} x {m} + {1 - lam:.2f} x KN-{cfg.ngram_order}"
        mix_row = _row(f"{m}+{kn}", "interpolated", impl, row["params"] + groups["baselines"][kn]["params"], mixed)
        add("interpolated", mix_row, f"{m}+{kn} (weight {lam:.3f})", weight=round(lam, DIGITS))

    eval_json = {"level": vocab.level, "targets": {s: int(len(splits[s]) - 1) for s in SCORED_SPLITS}, **groups}
    table = results_table(rows, vocab.level)
    md = markdown_table(table)
    out = root / paths.EVAL_DIR
    plot_learning_curves(curves, out / "learning_curves.png", vocab.level)
    plot_test_perplexity(table, out / "test_perplexity.png")
    write_text(out / "results.csv", table.to_csv(index=False))
    write_text(out / "results.md", md)
    write_json(root / paths.EVAL, eval_json)
    return {"eval": eval_json, "table": table, "markdown": md}
