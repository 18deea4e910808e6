"""The training loop serves exactly the planned sample order: every update one batch, whole shuffled
passes, nothing skipped or repeated across Keras' rounds; k-output models get each label k times."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from pipeline.settings import TrainConfig  # noqa: E402
from pipeline.training import fit as fit_module  # noqa: E402


@pytest.mark.parametrize("outputs", [1, 3])
def test_fit_serves_the_planned_order_round_after_round(outputs):
    n, batch = 37, 4
    X = np.zeros((n, 3, 2), np.float32)
    X[:, 0, 0] = np.arange(n)  # row id in the data itself
    y = (np.arange(n) % 2).astype(np.int64)
    inputs = keras.Input((None, 2))
    model = keras.Model(inputs, keras.layers.Dense(outputs)(keras.layers.GRU(2)(inputs)))
    model.compile(keras.optimizers.Adam(), keras.losses.BinaryCrossentropy(from_logits=True))
    served, keras_fit = [], model.fit

    def spy(x, y, **kwargs):  # records what each round trains on, in order
        served.append((x[:, 0, 0].copy(), y.copy(), kwargs["batch_size"], kwargs["shuffle"]))
        return keras_fit(x, y, **kwargs)

    model.fit = spy
    cfg = TrainConfig(updates=250, batch_size=batch, verbose="0", class_weight="none")
    result = fit_module.fit(model, X, y, None, None, cfg, seed=3)

    plan = result.schedule
    assert plan["rounds"] == 3 and plan["updates_per_round"] == 100 and plan["updates"] == 300
    assert len(served) == 3 and all(len(ids) == 100 * batch and b == batch and not shuffle for ids, _, b, shuffle in served)
    rows = np.concatenate([ids for ids, *_ in served]).astype(np.int64)
    assert np.array_equal(rows, fit_module.sample_order(n, 300 * batch, seed=3))  # the planned order, in order
    labels = np.concatenate([lab for _, lab, *_ in served])
    assert labels.shape == ((1200,) if outputs == 1 else (1200, outputs))
    assert np.array_equal(labels.reshape(1200, -1), np.repeat(y[rows][:, None], outputs, axis=1))
    assert len(result.history["loss"]) == 3 and all(v > 0 for v in result.history["loss"])
    assert int(model.optimizer.iterations.numpy()) == 300  # every planned update ran
