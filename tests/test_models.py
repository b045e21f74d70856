import pytest
import torch
import torch.nn.functional as F

from rnnlm.models import CELLS, GATES, RNNLM, ScratchLayer, detach_state, dropout, num_parameters


def copy_torch_to_scratch(torch_model: RNNLM, scratch_model: RNNLM) -> None:
    """Copy a torch-impl model's weights into a scratch-impl one of the same config."""
    with torch.no_grad():
        if torch_model.embedding is not None:
            scratch_model.embedding.weight.copy_(torch_model.embedding.weight)
        scratch_model.decoder.load_state_dict(torch_model.decoder.state_dict())
        H = torch_model.hidden
        # torch's gate order in weight_ih / weight_hh rows
        torch_order = {"rnn": ("h",), "lstm": ("i", "f", "c", "o"), "gru": ("r", "z", "h")}[torch_model.cell]
        assert set(GATES[torch_model.cell]) == set(torch_order)
        for l, layer in enumerate(scratch_model.rnn.layers):
            w_ih, w_hh, b_ih, b_hh = (
                getattr(torch_model.rnn, f"{name}_l{l}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            for k, g in enumerate(torch_order):
                rows = slice(k * H, (k + 1) * H)
                getattr(layer, f"W_x{g}").copy_(w_ih[rows].T)
                getattr(layer, f"W_h{g}").copy_(w_hh[rows].T)
                if torch_model.cell == "gru" and g == "h":
                    getattr(layer, f"b_{g}").copy_(b_ih[rows])
                    layer.b_hh.copy_(b_hh[rows])
                else:
                    getattr(layer, f"b_{g}").copy_(b_ih[rows] + b_hh[rows])


def _pair(cell, layers, embedding, vocab=11, hidden=8):
    torch.manual_seed(0)
    ref = RNNLM(cell, "torch", vocab, hidden=hidden, layers=layers, dropout=0.0, embedding=embedding).double()
    scratch = RNNLM(cell, "scratch", vocab, hidden=hidden, layers=layers, dropout=0.0, embedding=embedding).double()
    copy_torch_to_scratch(ref, scratch)
    return ref.eval(), scratch.eval()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("embedding", [0, 5])
def test_scratch_matches_torch_given_the_same_weights(cell, layers, embedding):
    ref, scratch = _pair(cell, layers, embedding)
    X = torch.randint(0, 11, (3, 7))
    state0 = ref.begin_state(3)
    if cell == "lstm":
        state0 = tuple(torch.randn_like(s).double() for s in state0)
    else:
        state0 = torch.randn_like(state0).double()
    logits_ref, state_ref = ref(X, state0)
    logits_s, state_s = scratch(X, state0)
    assert logits_ref.shape == (3, 7, 11)
    torch.testing.assert_close(logits_s, logits_ref, rtol=1e-9, atol=1e-9)

    def flat(s):
        return torch.cat([t.flatten() for t in s]) if isinstance(s, tuple) else s.flatten()

    torch.testing.assert_close(flat(state_s), flat(state_ref), rtol=1e-9, atol=1e-9)
    # torch keeps two bias vectors per gate (b_ih, b_hh); the equations have one (GRU: plus b_hh of
    # the candidate), so torch has exactly this many more parameters per layer:
    extra_biases = {"rnn": 1, "lstm": 4, "gru": 2}[cell] * 8 * layers
    assert num_parameters(ref) == num_parameters(scratch) + extra_biases
    # and in float32 within fp32 tolerance
    ref32, s32 = ref.float(), scratch.float()
    torch.testing.assert_close(s32(X)[0], ref32(X)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_one_hot_matmul_equals_row_lookup(cell):
    """The textbook feeds one_hot(X) @ W_xh; the scratch layer does a row lookup instead."""
    torch.manual_seed(1)
    layer = ScratchLayer(cell, input_size=13, hidden=6, ids_input=True).double()
    ids = torch.randint(0, 13, (5, 4))
    for g in layer.gates:
        W = getattr(layer, f"W_x{g}")
        torch.testing.assert_close(F.one_hot(ids, 13).double() @ W, F.embedding(ids, W), rtol=0, atol=0)
    # the whole layer: ids input == dense one-hot input through the same weights
    dense = ScratchLayer(cell, input_size=13, hidden=6, ids_input=False).double()
    dense.load_state_dict(layer.state_dict())
    h = torch.zeros(4, 6, dtype=torch.float64)
    state = (h, h.clone()) if cell == "lstm" else h
    out_ids, _ = layer(ids, state)
    out_dense, _ = dense(F.one_hot(ids, 13).double(), state)
    torch.testing.assert_close(out_ids, out_dense, rtol=1e-12, atol=1e-12)


def test_scratch_parameters_are_named_after_the_equations():
    names = {n for n, _ in RNNLM("lstm", "scratch", 10, hidden=4, embedding=3).named_parameters()}
    for g in "ifoc":
        assert {f"rnn.layers.0.W_x{g}", f"rnn.layers.0.W_h{g}", f"rnn.layers.0.b_{g}"} <= names
    names = {n for n, _ in RNNLM("rnn", "scratch", 10, hidden=4, embedding=3).named_parameters()}
    assert {"rnn.layers.0.W_xh", "rnn.layers.0.W_hh", "rnn.layers.0.b_h"} <= names


@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_state_shapes_and_detach(impl):
    m = RNNLM("lstm", impl, 9, hidden=4, layers=2, embedding=3)
    logits, (H, C) = m(torch.zeros(2, 5, dtype=torch.long))
    assert H.shape == C.shape == (2, 2, 4)
    H2, C2 = detach_state((H, C))
    assert H.requires_grad and not H2.requires_grad


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding", [0, 5])
def test_hand_written_bptt_matches_autograd(cell, embedding):
    """The scratch layers' written-out backpropagation through time (``bptt: fused``) gives the
    same loss and gradients as autograd differentiating the step equations (``bptt: autograd``)."""
    torch.manual_seed(3)
    fused = RNNLM(cell, "scratch", 11, hidden=8, layers=2, dropout=0.0, embedding=embedding).double()
    autograd = RNNLM(cell, "scratch", 11, hidden=8, layers=2, dropout=0.0, embedding=embedding, bptt="autograd")
    autograd = autograd.double()
    autograd.load_state_dict(fused.state_dict())
    assert fused.config["bptt"] == "fused" and autograd.config["bptt"] == "autograd"
    assert {layer.bptt for layer in autograd.rnn.layers} == {"autograd"}
    X = torch.randint(0, 11, (4, 6))
    Y = torch.randint(0, 11, (4, 6))
    state0 = fused.begin_state(4)
    state0 = tuple(torch.randn_like(s) for s in state0) if cell == "lstm" else torch.randn_like(state0)
    leaves = state0 if cell == "lstm" else (state0,)
    for s in leaves:
        s.requires_grad_(True)  # the initial state's gradient (what flows into a previous minibatch)

    def grads(model):
        model.zero_grad()
        for s in leaves:
            s.grad = None
        logits, state = model(X, state0)
        last = state[1] if cell == "lstm" else state  # the final state's gradient path too
        loss = F.cross_entropy(logits.reshape(-1, 11), Y.reshape(-1)) + last.pow(2).sum()
        loss.backward()
        named = {n: p.grad.clone() for n, p in model.named_parameters()}
        return loss.detach(), {**named, **{f"state0[{i}]": s.grad.clone() for i, s in enumerate(leaves)}}

    loss_f, g_fused = grads(fused)
    loss_a, g_auto = grads(autograd)
    torch.testing.assert_close(loss_f, loss_a, rtol=1e-12, atol=1e-12)
    assert g_fused.keys() == g_auto.keys()
    for name in g_auto:
        assert g_auto[name].abs().sum() > 0, name  # every parameter gets a gradient
        torch.testing.assert_close(g_fused[name], g_auto[name], rtol=1e-10, atol=1e-12, msg=name)


# --- AWD-LSTM regularisers (weight drop, embedding dropout) -----------------------------------
@pytest.mark.parametrize("impl", ["torch", "scratch"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weight_drop_is_off_in_eval_mode_and_differs_between_training_steps(cell, impl):
    torch.manual_seed(0)
    dropped = RNNLM(cell, impl, 11, hidden=8, layers=2, dropout=0.0, embedding=4, weight_drop=0.5)
    plain = RNNLM(cell, impl, 11, hidden=8, layers=2, dropout=0.0, embedding=4)
    plain.load_state_dict(dropped.state_dict())
    weights = {k: v.clone() for k, v in dropped.state_dict().items()}
    X = torch.randint(0, 11, (3, 7))
    dropped.eval(), plain.eval()
    assert torch.equal(dropped(X)[0], plain(X)[0])  # eval: the trained weights, nothing dropped
    dropped.train()
    first, second = dropped(X)[0], dropped(X)[0]
    assert not torch.allclose(first, second) and not torch.allclose(first, plain(X)[0])
    nll, _ = dropped.token_nll(X, torch.randint(0, 11, (3, 7)))
    nll.mean().backward()
    recurrent = [p for n, p in dropped.rnn.named_parameters() if n.startswith("weight_hh") or ".W_h" in n]
    assert recurrent and all(p.grad is not None and p.grad.abs().sum() > 0 for p in recurrent)
    assert all(torch.equal(weights[k], v) for k, v in dropped.state_dict().items())  # the weights themselves stay


def test_embedding_dropout_drops_whole_token_types_in_training_only():
    torch.manual_seed(0)
    model = RNNLM("lstm", "torch", 50, hidden=8, layers=1, dropout=0.0, embedding=6, embedding_dropout=0.5)
    W = model.embedding.weight
    model.eval()
    assert torch.equal(model._embedding_weights(), W)
    model.train()
    rows = model._embedding_weights()
    zero = (rows == 0).all(1)
    assert 0 < int(zero.sum()) < 50  # some token types dropped, not all
    assert torch.allclose(rows[~zero], 2 * W[~zero])  # the kept ones scaled by 1 / (1 - p)
    assert not torch.equal(zero, (model._embedding_weights() == 0).all(1))  # a new draw each step


def test_locked_dropout_keeps_one_mask_along_each_sequence():
    x = torch.ones(9, 4, 32)  # (time, batch, features)
    torch.manual_seed(0)
    y = dropout(x, 0.5, training=True, locked=True)
    assert torch.equal(y, y[:1].expand_as(y))  # the same mask at every time step
    assert set(y.unique().tolist()) == {0.0, 2.0} and not torch.equal(y[:, 0], y[:, 1])  # kept scaled; per sequence
    assert not torch.equal(y, dropout(x, 0.5, training=True, locked=True))  # a new draw each call
    plain = dropout(x, 0.5, training=True)
    assert not torch.equal(plain, plain[:1].expand_as(plain))  # ordinary dropout: a mask per step
    assert torch.equal(dropout(x, 0.5, training=False, locked=True), x)


@pytest.mark.parametrize("impl", ["torch", "scratch"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_locked_dropout_model_runs_the_same_network(cell, impl):
    """With p = 0 the torch cells' locked path (the layers one by one) gives the model's own outputs,
    states and gradients; with p > 0 a unit dropped between layers stays dropped along the sequence."""
    torch.manual_seed(0)
    kw = dict(hidden=8, layers=3, embedding=4)
    X, Y = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (3, 7))
    if impl == "torch":  # (scratch runs the very same code at p = 0: only its masks, below, can differ)
        locked = RNNLM(cell, impl, 11, dropout=0.0, locked_dropout=True, weight_drop=0.0, **kw)
        plain = RNNLM(cell, impl, 11, dropout=0.0, **kw)
        plain.load_state_dict(locked.state_dict())
        outs = []
        for model in (locked, plain):
            model.train()
            nll, state = model.token_nll(X, Y)
            nll.sum().backward()
            outs.append((nll, state, {n: p.grad for n, p in model.named_parameters()}))
        torch.testing.assert_close(outs[0][0], outs[1][0])
        torch.testing.assert_close(outs[0][1], outs[1][1])
        for name, grad in outs[0][2].items():
            torch.testing.assert_close(grad, outs[1][2][name], msg=name)
    # p > 0: the input of layer 2 is the hidden output of layer 1 times a mask fixed in time
    dropped = RNNLM(cell, impl, 11, dropout=0.5, locked_dropout=True, **kw)
    seen = []
    target = dropped.rnn.layers[1] if impl == "scratch" else None
    if target is not None:
        target.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    else:
        dropped.drop = lambda x, f=dropped.drop: seen.append(f(x)) or seen[-1]
    dropped.train()
    dropped(X)
    between = seen[0] if impl == "scratch" else seen[1]  # torch: [embeddings, layer 1 -> 2, ...]
    zero = between == 0
    assert zero.any() and torch.equal(zero, zero[:1].expand_as(zero))


@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_ar_and_tar_are_added_to_the_training_loss_only(impl):
    from rnnlm.train import train_step

    torch.manual_seed(0)
    X, Y = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (3, 7))
    kw = dict(hidden=8, layers=2, dropout=0.5, embedding=4, locked_dropout=True)
    model = RNNLM("lstm", impl, 11, ar=2.0, tar=1.0, **kw)
    seen = []  # what the output dropout got and gave: the last layer's outputs h_t and o_t
    model.drop = lambda x, f=model.drop: seen.append((x, f(x))) or seen[-1][1]
    model.train()
    model.features(X)
    h, o = seen[-1]
    assert not torch.equal(h, o)  # dropout on: AR reads o_t, TAR reads h_t
    expected = 2.0 * o.pow(2).mean() + 1.0 * (h[1:] - h[:-1]).pow(2).mean()
    torch.testing.assert_close(model.activation_loss, expected)
    model.eval()
    model.token_nll(X, Y)
    assert model.activation_loss is None  # evaluation: nothing added, the training term dropped
    model.train()
    model.features(X[:, :1])  # one time step: no step to regularise, AR alone
    torch.testing.assert_close(model.activation_loss, 2.0 * seen[-1][1].pow(2).mean())
    del model.drop  # back to the method
    twin = RNNLM("lstm", impl, 11, **kw)
    twin.load_state_dict(model.state_dict())
    losses, after = [], []
    for m in (model, twin):
        m.train()
        torch.manual_seed(1)  # the same dropout masks in both
        optimizer = torch.optim.SGD(m.parameters(), lr=1.0)
        loss, _ = train_step(m, optimizer, X, Y, None, clip_theta=0.0)
        losses.append(loss)
        after.append(m.state_dict())
    torch.testing.assert_close(losses[0], losses[1])  # the reported loss: the NLL alone
    assert model.activation_loss is None  # used once, then dropped
    decoder = "decoder.weight"
    assert torch.equal(after[0][decoder], after[1][decoder])  # AR/TAR do not reach the output layer...
    assert not torch.allclose(after[0]["embedding.weight"], after[1]["embedding.weight"])  # ...but the network


def test_locked_dropout_with_weight_drop_trains_the_torch_layers_one_by_one():
    """AWD-LSTM's setting: W_hh dropped and locked masks on the embeddings, between layers and on
    the outputs; every weight gets a gradient, and the stored weights stay as they were."""
    torch.manual_seed(0)
    model = RNNLM(
        "lstm", "torch", 11, hidden=8, layers=3, dropout=0.5, embedding=4, locked_dropout=True, weight_drop=0.5
    )
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    outs = []
    model.drop = lambda x, f=model.drop: outs.append(f(x)) or outs[-1]
    model.train()
    nll, (H, C) = model.token_nll(torch.randint(0, 11, (5, 9)), torch.randint(0, 11, (5, 9)))
    assert H.shape == C.shape == (3, 5, 8)
    masks = [out == 0 for out in outs]
    assert len(masks) == 4  # embeddings, layer 1 -> 2, layer 2 -> 3, outputs
    assert all(m.any() and torch.equal(m, m[:1].expand_as(m)) for m in masks)
    nll.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_embedding_dropout_needs_an_embedding():
    from conftest import config

    from rnnlm.errors import ParamError

    with pytest.raises(ParamError, match=r"lstm\.embedding_dropout: needs an embedding layer \(lstm\.embedding > 0\)"):
        config("lstm", {"embedding": 0, "embedding_dropout": 0.1})
    with pytest.raises(ParamError, match=r"lstm\.weight_drop"):
        config("lstm", {"weight_drop": 1.0})
