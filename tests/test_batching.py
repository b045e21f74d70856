import numpy as np
import pytest
import torch

from rnnlm.batching import check_batchable, eval_streams, random_batches, sequential_batches
from rnnlm.errors import ParamError

TOY = np.arange(30)


class FixedRng:
    """A stand-in Generator with a chosen offset, to check exact windows."""

    def __init__(self, offset):
        self.offset = offset

    def integers(self, low, high):
        assert low <= self.offset < high
        return self.offset

    def shuffle(self, a):
        a[:] = a[::-1]


def test_sequential_exact_windows():
    got = list(sequential_batches(TOY, batch_size=2, num_steps=5, rng=FixedRng(3)))
    # offset 3: tokens 3..28 -> 26 tokens -> 2 rows of 13; Y is X shifted by one
    X0, Y0 = got[0]
    assert X0.tolist() == [[3, 4, 5, 6, 7], [16, 17, 18, 19, 20]]
    assert Y0.tolist() == [[4, 5, 6, 7, 8], [17, 18, 19, 20, 21]]
    X1, _ = got[1]
    assert X1.tolist() == [[8, 9, 10, 11, 12], [21, 22, 23, 24, 25]]  # continues each row
    assert len(got) == 2


def test_random_exact_windows():
    got = list(random_batches(TOY, batch_size=2, num_steps=5, rng=FixedRng(2)))
    # offset 2: tokens 2..29 (28) -> 5 subsequences starting at 2,7,12,17,22; reversed order
    assert [x.tolist() for x, _ in got] == [
        [[22, 23, 24, 25, 26], [17, 18, 19, 20, 21]],
        [[12, 13, 14, 15, 16], [7, 8, 9, 10, 11]],
    ]
    for X, Y in got:
        assert torch.equal(Y, X + 1)


@pytest.mark.parametrize("fn", [random_batches, sequential_batches])
def test_deterministic_for_a_seed(fn):
    a = [x.tolist() for x, _ in fn(TOY, 2, 4, np.random.default_rng(7))]
    b = [x.tolist() for x, _ in fn(TOY, 2, 4, np.random.default_rng(7))]
    c = [x.tolist() for seed in range(1, 6) for x, _ in fn(TOY, 2, 4, np.random.default_rng(seed))]
    assert a == b and a and len(c) > len(a)


def test_unbatchable_configs_name_the_param():
    with pytest.raises(ParamError, match=r"train\.num_steps: num_steps=40 is not shorter"):
        check_batchable(30, 2, 40, "sequential")
    with pytest.raises(ParamError, match=r"train\.batch_size: no minibatch of batch_size=8"):
        check_batchable(30, 8, 5, "random")
    check_batchable(30, 2, 5, "random")
    check_batchable(30, 2, 5, "sequential")


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_check_batchable_guarantees_a_batch_for_every_offset(sampling):
    fn = random_batches if sampling == "random" else sequential_batches
    for n in range(12, 40):
        try:
            check_batchable(n, 2, 5, sampling)
        except ParamError:
            continue
        for off in range(0, 5 + (sampling == "sequential")):
            assert list(fn(np.arange(n), 2, 5, FixedRng(off))), (n, off)


def test_eval_streams_cover_every_target_once():
    X, Y, M = eval_streams(np.arange(11), batch_size=3)
    assert X.shape == (3, 4)
    assert sorted(Y[M].tolist()) == list(range(1, 11))
    assert torch.equal(Y[M], X[M] + 1)
