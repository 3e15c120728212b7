"""The hand-written NumPy layers against PyTorch (same weights, float64) and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model import (
    CELL_TYPES,
    Adam,
    CharRNN,
    Dropout,
    ModelConfig,
    clip_grad_norm,
    cosine_lr,
    cross_entropy,
)

TORCH_LAYERS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}
B, T, D, H, V = 3, 7, 5, 4, 6


def tensor(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def ours_and_torch_layer(kind, n_in=D, n_layer=1, seed=0):
    """A NumPy model with torch's copy of its recurrent weights, layer by layer."""
    config = ModelConfig(V, kind, n_in, H, n_layer, "float64")
    model = CharRNN(config, np.random.default_rng(seed))
    reference = TORCH_LAYERS[kind](n_in, H, num_layers=n_layer, batch_first=True).double()
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            for ours, theirs in [("W_ih", "weight_ih"), ("W_hh", "weight_hh")]:
                getattr(reference, f"{theirs}_l{i}").copy_(tensor(getattr(layer.cell, ours)))
            for ours, theirs in [("b_ih", "bias_ih"), ("b_hh", "bias_hh")]:
                getattr(reference, f"{theirs}_l{i}").copy_(tensor(getattr(layer.cell, ours)))
    return model, reference


def torch_state(kind, state, grad=True):
    """Our per-layer tuples -> torch's h0 (and c0), each (n_layer, B, H)."""
    hs = tensor(np.stack([s[0] for s in state]), grad)
    if kind != "lstm":
        return hs
    return hs, tensor(np.stack([s[1] for s in state]), grad)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unrolled_layer_matches_torch_forward_and_every_gradient(kind):
    rng = np.random.default_rng(1)
    model, reference = ours_and_torch_layer(kind)
    layer = model.layers[0]
    x = rng.standard_normal((B, T, D))
    state = tuple(rng.standard_normal((B, H)) for _ in range(layer.cell.n_states))
    dhs = rng.standard_normal((B, T, H))  # a random upstream gradient on every output
    dlast = tuple(rng.standard_normal((B, H)) for _ in range(layer.cell.n_states))

    hs, last = layer.forward(x, state)
    dx, dfirst = layer.backward(dhs, dlast)

    tx = tensor(x, True)
    t0 = torch_state(kind, [state])
    t_hs, t_last = reference(tx, t0)
    t_last = (t_last,) if kind != "lstm" else t_last
    loss = (t_hs * tensor(dhs)).sum() + sum((s[0] * tensor(d)).sum() for s, d in zip(t_last, dlast))
    loss.backward()

    np.testing.assert_allclose(hs, t_hs.detach().numpy(), rtol=0, atol=1e-12)
    for ours, theirs in zip(last, t_last):
        np.testing.assert_allclose(ours, theirs[0].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-12)
    t0 = (t0,) if kind != "lstm" else t0
    for ours, theirs in zip(dfirst, t0):
        np.testing.assert_allclose(ours, theirs.grad[0].numpy(), rtol=0, atol=1e-12)
    cell = layer.cell
    for ours, theirs in [
        (cell.dW_ih, reference.weight_ih_l0),
        (cell.dW_hh, reference.weight_hh_l0),
        (cell.db_ih, reference.bias_ih_l0),
        (cell.db_hh, reference.bias_hh_l0),
    ]:
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_one_cell_step_matches_torch_cell(kind):
    rng = np.random.default_rng(2)
    cell = CELL_TYPES[kind](D, H, rng)
    cell.W_ih, cell.W_hh = cell.W_ih.astype(np.float64), cell.W_hh.astype(np.float64)
    reference = TORCH_CELLS[kind](D, H).double()
    with torch.no_grad():
        reference.weight_ih.copy_(tensor(cell.W_ih))
        reference.weight_hh.copy_(tensor(cell.W_hh))
        reference.bias_ih.copy_(tensor(cell.b_ih))
        reference.bias_hh.copy_(tensor(cell.b_hh))
    x = rng.standard_normal((B, D))
    state = tuple(rng.standard_normal((B, H)) for _ in range(cell.n_states))
    dnew = tuple(rng.standard_normal((B, H)) for _ in range(cell.n_states))

    new_state, cache = cell.step(x @ cell.W_ih.T + cell.b_ih, state)
    d_xw, d_hw, dprev = cell.step_backward(dnew, cache)

    tx, tstate = tensor(x, True), tuple(tensor(s, True) for s in state)
    t_new = reference(tx, tstate if kind == "lstm" else tstate[0])
    t_new = t_new if kind == "lstm" else (t_new,)
    sum((n * tensor(d)).sum() for n, d in zip(t_new, dnew)).backward()
    for ours, theirs in zip(new_state, t_new):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_xw @ cell.W_ih, tx.grad.numpy(), rtol=0, atol=1e-12)
    for ours, theirs in zip(dprev, tstate):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_hw.T @ state[0], reference.weight_hh.grad.numpy(), atol=1e-12)


def assert_output_and_outer_gradients_match(
    model, logits, loss, t_logits, targets, emb, head_W, head_b
):
    """Our logits and loss equal torch's cross-entropy on its logits, and the embedding's and the
    head's gradients equal torch's (the caller checks the recurrent layers)."""
    t_loss = F.cross_entropy(
        t_logits.reshape(-1, V), torch.tensor(targets).reshape(-1), ignore_index=-1
    )
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=0, atol=1e-12)
    assert abs(loss - t_loss.item()) < 1e-12
    np.testing.assert_allclose(model.embedding.dW, emb.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.head.dW, head_W.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.head.db, head_b.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_stacked_model_matches_torch_embedding_rnn_linear_cross_entropy(kind):
    rng = np.random.default_rng(3)
    model, reference = ours_and_torch_layer(kind, n_in=D, n_layer=2)
    idx = rng.integers(0, V, (B, T))
    targets = rng.integers(0, V, (B, T))
    targets[0, -2:] = -1  # padding is ignored

    logits, loss, _ = model.forward(idx, targets)
    model.backward()

    emb = tensor(model.embedding.W, True)
    head_W, head_b = tensor(model.head.W, True), tensor(model.head.b, True)
    t_hs, _ = reference(emb[torch.tensor(idx)])
    t_logits = t_hs @ head_W.T + head_b
    assert_output_and_outer_gradients_match(
        model, logits, loss, t_logits, targets, emb, head_W, head_b
    )
    for i, layer in enumerate(model.layers):
        for ours, theirs in [("dW_ih", "weight_ih"), ("dW_hh", "weight_hh"), ("db_hh", "bias_hh")]:
            expected = getattr(reference, f"{theirs}_l{i}").grad.numpy()
            np.testing.assert_allclose(getattr(layer.cell, ours), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_every_gradient_matches_finite_differences(kind, dropout):
    rng = np.random.default_rng(4)
    model = CharRNN(ModelConfig(V, kind, 3, 4, 2, "float64", dropout), rng)
    idx, targets = rng.integers(0, V, (2, 5)), rng.integers(0, V, (2, 5))

    def loss():  # a generator seeded alike every time: the same dropout masks in every pass
        return model.forward(idx, targets, dropout_rng=np.random.default_rng(40))[1]

    loss()
    model.backward()
    if dropout:
        assert all((drop.mask == 0).any() for drop in model.drops)  # the masks did drop
    grads = {k: g.copy() for k, g in model.named_grads().items()}
    eps = 1e-6
    for name, param in model.named_params().items():
        for flat in rng.choice(param.size, size=min(param.size, 6), replace=False):
            i = np.unravel_index(flat, param.shape)
            saved = param[i]
            param[i] = saved + eps
            plus = loss()
            param[i] = saved - eps
            minus = loss()
            param[i] = saved
            numeric = (plus - minus) / (2 * eps)  # central difference, error O(eps^2)
            assert abs(numeric - grads[name][i]) < 1e-7 * max(1.0, abs(numeric)), name


def single_layer_torch_copy(cell):
    """A one-layer torch.nn.RNN/LSTM/GRU holding a copy of our cell's weights."""
    kind = {cls: name for name, cls in CELL_TYPES.items()}[type(cell)]
    reference = TORCH_LAYERS[kind](cell.W_ih.shape[1], cell.n_hidden, batch_first=True).double()
    with torch.no_grad():
        for ours, theirs in [("W_ih", "weight_ih"), ("W_hh", "weight_hh")]:
            getattr(reference, f"{theirs}_l0").copy_(tensor(getattr(cell, ours)))
        for ours, theirs in [("b_ih", "bias_ih"), ("b_hh", "bias_hh")]:
            getattr(reference, f"{theirs}_l0").copy_(tensor(getattr(cell, ours)))
    return reference


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dropout_model_matches_torch_with_the_same_masks(kind):
    p = 0.4
    rng = np.random.default_rng(14)
    model = CharRNN(ModelConfig(V, kind, D, H, 2, "float64", dropout=p), rng)
    idx, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    targets[1, -3:] = -1

    logits, loss, _ = model.forward(idx, targets, dropout_rng=np.random.default_rng(15))
    model.backward()

    masks = [drop.mask for drop in model.drops]  # before layer 0, layer 1 and the head
    assert [m.shape for m in masks] == [(B, T, D), (B, T, H), (B, T, H)]
    for mask in masks:  # inverted dropout: each entry dropped (0) or kept and scaled by 1/(1-p)
        assert set(np.unique(mask)) == {0.0, 1.0 / (1.0 - p)}
    emb = tensor(model.embedding.W, True)
    head_W, head_b = tensor(model.head.W, True), tensor(model.head.b, True)
    references = [single_layer_torch_copy(layer.cell) for layer in model.layers]
    x = emb[torch.tensor(idx)]
    for reference, mask in zip(references, masks):
        x, _ = reference(x * tensor(mask))
    t_logits = (x * tensor(masks[-1])) @ head_W.T + head_b
    assert_output_and_outer_gradients_match(
        model, logits, loss, t_logits, targets, emb, head_W, head_b
    )
    for layer, reference in zip(model.layers, references):
        for ours, theirs in [("dW_ih", "weight_ih"), ("dW_hh", "weight_hh"), ("db_ih", "bias_ih")]:
            expected = getattr(reference, f"{theirs}_l0").grad.numpy()
            np.testing.assert_allclose(getattr(layer.cell, ours), expected, rtol=0, atol=1e-12)

    # without a generator (evaluation, sampling) dropout is off: the model without dropout
    plain = CharRNN(ModelConfig(V, kind, D, H, 2, "float64"), np.random.default_rng(14))
    np.testing.assert_array_equal(model.forward(idx)[0], plain.forward(idx)[0])


def test_dropout_drops_a_fraction_p_and_keeps_the_mean():
    x = np.ones((400, 500))
    y = Dropout(0.3).forward(x, np.random.default_rng(16))
    assert abs((y == 0).mean() - 0.3) < 0.005  # 200,000 draws: the standard error is 0.001
    assert abs(y.mean() - 1.0) < 0.01  # E[y] = x, which lets evaluation skip the layer
    assert Dropout(0.3).forward(x, None) is x and Dropout(0.0).forward(x, np.random) is x


def test_cosine_schedule_matches_torch_cosine_annealing():
    lr, min_ratio, steps = 3e-3, 0.1, 11
    t_p = torch.nn.Parameter(torch.zeros(1))
    t_opt = torch.optim.SGD([t_p], lr=lr)
    t_sched = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, steps - 1, eta_min=lr * min_ratio)
    for step in range(1, steps + 1):  # torch's epoch k is our step k + 1
        assert abs(cosine_lr(step, steps, lr, lr * min_ratio) - t_opt.param_groups[0]["lr"]) < 1e-15
        t_opt.step()
        t_sched.step()
    assert (
        cosine_lr(1, steps, lr, 1e-4) == lr
        and abs(cosine_lr(steps, steps, lr, 1e-4) - 1e-4) < 1e-18
    )


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_truncated_bptt_carries_state_and_cuts_gradient_like_torch_detach(kind):
    rng = np.random.default_rng(5)
    model, reference = ours_and_torch_layer(kind)
    layer = model.layers[0]
    x = rng.standard_normal((B, 2 * T, D))
    dhs = rng.standard_normal((B, T, H))

    whole, _ = layer.forward(x, layer.cell.initial_state(B, np.float64))
    first, carried = layer.forward(x[:, :T], layer.cell.initial_state(B, np.float64))
    second, _ = layer.forward(x[:, T:], carried)  # the state crosses the window boundary
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-13)

    layer.backward(dhs)  # truncated: nothing flows back into the first window
    t_first, t_carried = reference(tensor(x[:, :T]))
    detached = tuple(s.detach() for s in t_carried) if kind == "lstm" else t_carried.detach()
    t_second, _ = reference(tensor(x[:, T:]), detached)
    reference.zero_grad()
    (t_second * tensor(dhs)).sum().backward()
    np.testing.assert_allclose(layer.cell.dW_hh, reference.weight_hh_l0.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(layer.cell.dW_ih, reference.weight_ih_l0.grad.numpy(), atol=1e-12)


def test_cross_entropy_with_padding_matches_torch():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((10, V)) * 3
    targets = rng.integers(0, V, 10)
    targets[[2, 7]] = -1
    loss, dlogits = cross_entropy(logits, targets)
    t_logits = tensor(logits, True)
    t_loss = F.cross_entropy(t_logits, torch.tensor(targets), ignore_index=-1)
    t_loss.backward()
    assert abs(loss - t_loss.item()) < 1e-12
    np.testing.assert_allclose(dlogits, t_logits.grad.numpy(), rtol=0, atol=1e-12)


def test_clipping_bounds_the_global_norm_like_torch():
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal((4, 5)) * 10, rng.standard_normal(3) * 10]
    params = [torch.nn.Parameter(tensor(np.zeros_like(g))) for g in grads]
    for p, g in zip(params, grads):
        p.grad = tensor(g)
    t_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.5)
    norm = clip_grad_norm(grads, max_norm=1.5)
    assert abs(norm - t_norm.item()) < 1e-10
    assert np.sqrt(sum((g * g).sum() for g in grads)) <= 1.5
    for p, g in zip(params, grads):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=0, atol=1e-12)
    small = [np.full(3, 0.1)]
    clip_grad_norm(small, max_norm=1.5)  # below the bound: untouched
    np.testing.assert_array_equal(small[0], np.full(3, 0.1))


def test_adam_matches_torch_adam():
    rng = np.random.default_rng(8)
    p = rng.standard_normal((3, 4))
    g = np.zeros_like(p)
    adam = Adam({"p": p}, {"p": g}, lr=0.01)
    t_p = torch.nn.Parameter(tensor(p))
    t_adam = torch.optim.Adam([t_p], lr=0.01)
    for _ in range(5):
        g[...] = rng.standard_normal(p.shape)
        t_p.grad = tensor(g)
        adam.step()
        t_adam.step()
    np.testing.assert_allclose(p, t_p.detach().numpy(), rtol=0, atol=1e-12)


def test_sampling_is_reproducible_by_seed_and_respects_top_k():
    model = CharRNN(ModelConfig(V, "lstm", 4, 8, 1), np.random.default_rng(9))
    a = model.generate([1, 2], 40, np.random.default_rng(10), temperature=1.5)
    b = model.generate([1, 2], 40, np.random.default_rng(10), temperature=1.5)
    c = model.generate([1, 2], 40, np.random.default_rng(11), temperature=1.5)
    assert a == b and a != c
    greedy = model.generate([1, 2], 20, np.random.default_rng(12), top_k=1)
    state = None
    token, expected = [1, 2], []
    for _ in range(20):  # top_k=1 must be the argmax at every step
        logits, _, state = model.forward(np.array([token]), state=state)
        token = [int(logits[0, -1].argmax())]
        expected.append(token[0])
    assert greedy == expected
    # a vanishing temperature is the argmax too, not an overflow
    assert model.generate([1, 2], 20, np.random.default_rng(13), temperature=1e-300) == expected
