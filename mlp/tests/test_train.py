"""Training end to end in-process: the loop learns, and checkpoints give back the same model."""

import dataclasses

import numpy as np
from model import BCEWithLogitsLoss, ModelConfig, SoftmaxCrossEntropy, build_mlp, predict
from optim import Adam
from train import DataLoader, TrainConfig, fit, load_model

from shared.data import make_toy
from shared.state import TrainingState


def test_short_training_run_on_xor_reaches_full_accuracy():
    rng = np.random.default_rng(0)
    X, y = make_toy("xor", n=200, noise=0.0, seed=0)
    model = build_mlp(ModelConfig(n_in=2, hidden=(16, 16), n_out=1, activation="relu"), rng)
    optimizer = Adam(model.parameters(), lr=0.02)
    history = fit(model, BCEWithLogitsLoss(), optimizer, DataLoader(X, y, 20, rng), epochs=60)
    model.eval()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (predict(model, X, "binary").argmax(axis=1) == y).mean() == 1.0


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    rng = np.random.default_rng(1)
    cfg = ModelConfig(n_in=2, hidden=(8, 8), n_out=3, dropout=0.2, batchnorm=True)
    model = build_mlp(cfg, rng)
    optimizer = Adam(model.parameters(), lr=0.01)
    X, y = make_toy("spiral", n=90, seed=1)
    fit(model, SoftmaxCrossEntropy(), optimizer, DataLoader(X, y, 16, rng), epochs=3)
    state = TrainingState(tmp_path / "model.npz", TrainConfig(), model=model, optimizer=optimizer)
    state.save(3, model_config=dataclasses.asdict(cfg), task="multiclass")
    loaded, ckpt = load_model(tmp_path / "model.npz")
    model.eval()
    loaded.eval()
    assert ckpt["step"] == 3 and ckpt["train_config"]["dataset"] == "spiral"
    assert np.array_equal(predict(model, X, "multiclass"), predict(loaded, X, "multiclass"))


def test_flat_parameters_round_trip_and_follow_parameters():
    model = build_mlp(ModelConfig(3, (4,), 2, batchnorm=True), np.random.default_rng(0))
    theta = model.flat_parameters()
    assert theta.shape == (3 * 4 + 4 + 4 + 4 + 4 * 2 + 2,)  # W, b, gamma, beta, W, b
    model.set_flat_parameters(np.arange(theta.size, dtype=float))
    assert model.layers[0].W[0, 1] == 1.0 and model.layers[1].gamma[0] == 16.0
    np.testing.assert_array_equal(model.flat_parameters(), np.arange(theta.size))


def test_a_last_batch_of_one_joins_the_batch_before_it():
    X, y = np.arange(1200.0)[:, None], np.arange(1200)
    batches = list(DataLoader(X, y, 11, np.random.default_rng(0)))
    assert min(len(b) for b, _ in batches) == 11 and len(batches[-1][0]) == 12
    assert len(batches) == len(DataLoader(X, y, 11, np.random.default_rng(0))) == 109
    np.testing.assert_array_equal(np.sort(np.concatenate([b[:, 0] for b, _ in batches])), X[:, 0])
