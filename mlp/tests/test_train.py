"""Training end to end in-process: the loop learns, and checkpoints give back the same model."""

import numpy as np
from model import BCEWithLogitsLoss, ModelConfig, SoftmaxCrossEntropy, build_mlp, predict
from optim import Adam
from train import DataLoader, fit, load_model, save_model

from shared.data import make_toy


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
    meta = {"model_config": {**cfg.__dict__, "hidden": list(cfg.hidden)}, "task": "multiclass"}
    save_model(tmp_path / "model.npz", model, optimizer, meta)
    loaded, _, _ = load_model(tmp_path / "model.npz")
    model.eval()
    loaded.eval()
    assert np.array_equal(predict(model, X, "multiclass"), predict(loaded, X, "multiclass"))


def test_a_last_batch_of_one_joins_the_batch_before_it():
    X, y = np.arange(1200.0)[:, None], np.arange(1200)
    batches = list(DataLoader(X, y, 11, np.random.default_rng(0)))
    assert min(len(b) for b, _ in batches) == 11 and len(batches[-1][0]) == 12
    assert len(batches) == len(DataLoader(X, y, 11, np.random.default_rng(0))) == 109
    np.testing.assert_array_equal(np.sort(np.concatenate([b[:, 0] for b, _ in batches])), X[:, 0])
