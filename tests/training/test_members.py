"""The member ensemble: independent members inside one GRU, and a merged model that is exactly the mean
of their logits in the ordinary exported architecture."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.settings import ModelConfig, load_config  # noqa: E402
from pipeline.training.model import MemberEnsemble  # noqa: E402


def _blocks(recurrent: np.ndarray, members: int) -> list[np.ndarray]:
    units = recurrent.shape[0]
    h = units // members
    return [np.concatenate([recurrent[i * h:(i + 1) * h, g * units + i * h:g * units + (i + 1) * h] for g in range(3)], 1)
            for i in range(members)]


@pytest.mark.parametrize("masking", [False, True])
def test_members_stay_independent_and_merge_exactly(masking):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 9, 3)).astype(np.float32)  # (batch, time, F)
    if masking:
        X[::3, 6:] = 0.0  # right padding on every third row
    y = (X[:, :, 0].mean(1) > 0).astype(np.float32)
    ens = MemberEnsemble(ModelConfig(units=12, members=4, recurrent_norm_max=0.5), 3, masking, learning_rate=0.05)
    ens.model.fit(X, np.repeat(y[:, None], 4, 1), epochs=4, batch_size=8, verbose=0)

    recurrent = ens.gru.get_weights()[1]  # (units, 3 units)
    mask = ens.gru.recurrent_constraint.mask
    assert np.abs(recurrent * (1 - mask)).max() == 0.0                                  # no member reads another
    assert all(np.linalg.svd(b, compute_uv=False).max() <= 0.5 + 1e-5 for b in _blocks(recurrent, 4))  # capped each
    assert np.abs(ens.heads.get_weights()[0] * (1 - ens.heads.kernel_constraint.mask)).max() == 0.0

    merged = ens.merged()
    assert [type(layer).__name__ for layer in merged.layers][-2:] == ["GlobalAveragePooling1D", "Dense"]
    logits = ens.model.predict(X, verbose=0).astype(np.float64)  # (batch, members)
    p = merged.predict(X, verbose=0)[:, 0]
    assert np.abs(1 / (1 + np.exp(-logits.mean(1))) - p).max() < 1e-6


def test_members_default_and_refusals():
    assert ModelConfig().resolved_members() == 2
    assert ModelConfig(units=31).resolved_members() == 1 and ModelConfig(layers=2).resolved_members() == 1
    assert ModelConfig(units=30, members=3).resolved_members() == 3
    with pytest.raises(ConfigError, match="model.members = 4 needs model.layers = 1, no Bidirectional"):
        load_config(None, {"model": {"members": 4, "bidirectional": True}})
    with pytest.raises(ConfigError, match="units 30"):
        load_config(None, {"model": {"members": 4, "units": 30}})


@pytest.mark.parametrize("members", [2, 3])
def test_multiclass_members_merge_to_the_softmax_of_their_mean_logits(members):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 7, 2)).astype(np.float32)  # (batch, time, F)
    y = np.digitize(X[:, :, 0].mean(1), [-0.2, 0.2])          # (batch,) 3 classes
    ens = MemberEnsemble(ModelConfig(units=12, members=members), 2, False, learning_rate=0.05, n_classes=3)
    history = ens.model.fit(X, y, epochs=3, batch_size=10, verbose=0).history
    assert np.isfinite(history["loss"]).all() and 0 <= history["accuracy"][-1] <= 1
    kernel = ens.heads.get_weights()[0]  # (units, members * 3): member i's 3 columns read only its units
    assert kernel.shape == (12, members * 3)
    assert np.abs(kernel * (1 - ens.heads.kernel_constraint.mask)).max() == 0.0
    owner = np.repeat(np.arange(members), 12 // members)
    assert all(np.abs(kernel[owner != i][:, 3 * i:3 * i + 3]).max() == 0.0 for i in range(members))

    merged = ens.merged()
    head = merged.get_layer("classifier")
    assert head.units == 3 and head.activation.__name__ == "softmax"
    z = ens.member_logits(X).astype(np.float64).mean(axis=1)  # (batch, 3): the mean of the members' logits
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    p = merged.predict(X, verbose=0)  # (batch, 3)
    assert p.shape == (60, 3) and np.abs(expected - p).max() < 1e-6
    # the members' loss is each member's own cross-entropy: the ensemble's loss equals their mean
    logits = ens.member_logits(X).astype(np.float64)  # (batch, members, 3)
    log_p = logits - logits.max(2, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(2, keepdims=True))
    expected_loss = -log_p[np.arange(60), :, y].mean()
    assert abs(float(ens.model.evaluate(X, y, verbose=0, return_dict=True)["loss"]) - expected_loss) < 1e-5
