"""The recurrent spectral-norm cap: applied after every update, off with 0, survives (de)serialization."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pipeline.settings import ModelConfig, load_config  # noqa: E402
from pipeline.training.model import build_model  # noqa: E402
from pipeline.keras_source.run import float64_copy  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402


def _recurrent_norm_after_training(cap: float) -> float:
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(units=8, recurrent_norm_max=cap), 2, masking=False, learning_rate=0.05)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 12, 2)).astype(np.float32)  # (batch, time, features)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.float32)
    model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    kernel = model.get_layer("gru_0").cell.recurrent_kernel.numpy()  # (H, 3H)
    return float(np.linalg.norm(kernel, 2))


def test_cap_bounds_the_recurrent_kernel_and_zero_turns_it_off():
    assert _recurrent_norm_after_training(0.5) <= 0.5 * (1 + 1e-5)
    assert _recurrent_norm_after_training(0.0) > 0.9  # orthogonal init (norm ~1.4 for (H, 3H)), then free


def test_capped_model_round_trips_through_its_config():
    model = build_model(ModelConfig(units=4), 3, masking=False)
    assert ModelConfig().recurrent_norm_max == 2.0
    assert model.get_layer("gru_0").recurrent_constraint.get_config() == {"max_value": 2.0}
    copy64 = float64_copy(model)  # rebuilt from get_config(): the constraint must deserialize
    X = np.random.default_rng(1).standard_normal((5, 7, 3)).astype(np.float32)
    assert np.abs(np.asarray(copy64(X.astype(np.float64))) - np.asarray(model(X))).max() < 1e-6


@pytest.mark.parametrize("bad", [-1.0, 0.05])
def test_cap_values_out_of_range_are_refused(bad):
    with pytest.raises(ConfigError, match="recurrent_norm_max"):
        load_config(None, {"model": {"recurrent_norm_max": bad}})
