"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, "Dynamic Evaluation of Neural
Sequence Models"): the model keeps learning from the text it has just scored.

The split is read left to right in segments of ``SEGMENT`` tokens. Each segment is scored with the
current weights first; then one step on that segment's mean loss moves the weights, RMS-normalised
and pulled back toward the trained weights theta_0:

    theta <- theta - eta * g / max(sqrt(MS), FLOOR * RMS) + decay * (theta_0 - theta)

MS is each weight's mean squared gradient on training text (the first ``MS_TOKENS`` tokens of the
train split), so that eta means the same for every weight; a tenth of RMS, the mean of sqrt(MS)
over all weights, floors it: a weight that training text barely moved (the output row of a rare
character, say) would otherwise take a step a million times too large, and the model diverged on
the Jay Chou lyrics (val perplexity inf; 66.7 with the floor, against 268.2 for the LSTM alone).
eta and decay are fitted on val alone (a grid, on its first ``FIT_TOKENS`` targets: five passes
over a long val split would cost more than training), then val and test are scored from the
trained weights. No
token is scored after a step that saw it, so appending text never changes an earlier score.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .batching import segments
from .metrics import model_token_nll
from .models import detach_state

SEGMENT = 50  # tokens scored between two steps (20 and 100 fitted within 0.006 nats/char of it on Tiny Shakespeare)
MS_TOKENS = 20_000  # training tokens whose gradients give MS
FIT_TOKENS = 10_000  # eta and decay are fitted on the val split's first FIT_TOKENS targets
FLOOR = 0.1  # sqrt(MS) is floored at FLOOR x its mean over all weights
ETAS = (1e-4, 3e-4, 1e-3, 3e-3)  # eta is fitted on val among these and 0 (decay 0), then decay at that eta
LARGER = (1e-2, 3e-2)  # then each of these in turn, while the largest eta tried fits best
DECAYS = (0.0, 0.02)


@torch.enable_grad()  # (callers may run under no_grad: these steps need gradients)
def mean_squared_grads(model, train: np.ndarray, device="cpu", segment: int = SEGMENT) -> list[torch.Tensor]:
    """MS: each weight's gradient squared, averaged over the segments of the train split's start."""
    was_training = model.training
    model.eval()
    ms = [torch.zeros_like(p) for p in model.parameters()]
    state, n = None, 0
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN has no backward in eval mode
        for X, Y in segments(np.asarray(train)[: MS_TOKENS + 1], segment, device):
            model.zero_grad(set_to_none=True)
            nll, state = model.token_nll(X, Y, state)
            nll.mean().backward()
            state, n = detach_state(state), n + 1
            for m, p in zip(ms, model.parameters()):
                if p.grad is not None:
                    m += p.grad.square()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return [m / max(n, 1) for m in ms]


@torch.enable_grad()
def log_probs(model, tokens: np.ndarray, ms, eta: float, decay: float, device="cpu", segment: int = SEGMENT):
    """log p of each of tokens[1:] under dynamic evaluation; ``model`` itself is left unchanged."""
    if eta == 0 and decay == 0:  # no step: the model as trained, in one forward pass
        return -model_token_nll(model, tokens, 1, segment, device)
    model = copy.deepcopy(model).eval()
    weights = list(model.parameters())
    trained = [p.detach().clone() for p in weights]
    rms = [m.sqrt() for m in ms]
    floor = FLOOR * float(sum(r.sum() for r in rms) / sum(r.numel() for r in rms))
    steps = [eta / r.clamp_min(floor) for r in rms]
    state, out = None, []
    with torch.backends.cudnn.flags(enabled=False):
        for X, Y in segments(tokens, segment, device):
            model.zero_grad(set_to_none=True)
            nll, state = model.token_nll(X, Y, state)
            out.append(-nll[0].detach().cpu().double())  # scored before the step that learns from it
            nll.mean().backward()
            state = detach_state(state)
            with torch.no_grad():
                for p, p0, step in zip(weights, trained, steps):
                    if p.grad is not None:
                        p -= step * p.grad
                    p += decay * (p0 - p)
    return torch.cat(out).numpy()


def fit(model, val: np.ndarray, ms, device="cpu") -> tuple[dict, np.ndarray]:
    """{"eta", "decay"} maximising the likelihood of the first ``FIT_TOKENS`` val targets: eta
    among ETAS and 0 (no decay), and LARGER ones while the largest tried wins (a text that repeats
    itself, such as lyrics, wants large steps), then each of DECAYS at that eta (a pass each); and
    the log-probs of all val targets under it (the fit's own pass when val is that short, else one
    more pass). eta 0 is the model as trained: where every step size hurts on val, the row is the
    model's."""
    whole, val = val, val[: FIT_TOKENS + 1]
    score, scored = {}, {}

    def likelihood(eta, decay) -> float:
        scored[eta, decay] = log_probs(model, val, ms, eta, decay, device)
        ll = float(scored[eta, decay].sum())
        return ll if np.isfinite(ll) else -np.inf  # a setting that diverges loses

    for eta in (0.0, *ETAS, *LARGER):
        if eta in LARGER and max(score, key=score.get)[0] < max(e for e, _ in score):
            break  # a smaller eta than the largest tried fits best: larger ones are not tried
        score[eta, DECAYS[0]] = likelihood(eta, DECAYS[0])
    eta = max(score, key=score.get)[0]
    for decay in DECAYS[1:] if eta else ():
        score[eta, decay] = likelihood(eta, decay)
    eta, decay = max(score, key=score.get)
    if len(whole) > len(val):
        return {"eta": eta, "decay": decay}, log_probs(model, whole, ms, eta, decay, device)
    return {"eta": eta, "decay": decay}, scored[eta, decay]
