"""Keras model construction from a ``ModelConfig``.

Owns: the architecture [Masking] -> GRU stack (optionally Bidirectional) -> [pooling] -> head, where
the head is Dense(1, sigmoid) with binary cross-entropy for two classes and Dense(k, softmax) with sparse
categorical cross-entropy for k >= 3, compiled with Adam; the member ensemble that trains ``members``
independent GRUs side by side inside that one architecture (``MemberEnsemble``). Its Masking layer's mask
value is ``dataset.PAD_VALUE`` (re-exported here), the value padded steps hold in the scaled inputs.
Imports: keras (heavy; build stage only). Reads/writes: nothing.
"""

from __future__ import annotations

import keras
import numpy as np

from pipeline import artifact
from pipeline.settings import ModelConfig
from pipeline.training.dataset import PAD_GUARD, PAD_VALUE  # declared beside the padding (TF-free)

__all__ = ["build_model", "INPUT_NAME", "PAD_VALUE", "SpectralNormCap", "MemberEnsemble", "BlockDiagonalCap",
           "BlockColumns", "head_width", "PAD_GUARD"]

INPUT_NAME = artifact.INPUT_NAME


def head_width(n_classes: int) -> int:
    """Units of the classifier head: 1 (p(class 1), sigmoid) for two classes, k (softmax) for k >= 3."""
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    return 1 if n_classes == 2 else int(n_classes)


@keras.saving.register_keras_serializable(package="gru_pipeline")
class SpectralNormCap(keras.constraints.Constraint):
    """After each update, scale a matrix down so its largest singular value is at most ``max_value``.

    On a GRU's recurrent kernel (H, 3H) this bounds how much one step can amplify a change in the
    hidden state. Unbounded, small-data training on long series drifts to kernels with spectral
    norm 7-12 whose float32 evaluation is chaotic: Keras and onnxruntime (and Keras and a float64
    evaluation of the same weights) then differ by 1e-5..1e-3, and the equivalence check refuses
    the model. Inference is unaffected: the constraint only shapes training.
    """

    def __init__(self, max_value: float = 2.0) -> None:
        self.max_value = float(max_value)

    def __call__(self, w):
        sigma = keras.ops.max(keras.ops.svd(w, compute_uv=False))
        return w * keras.ops.minimum(1.0, self.max_value / (sigma + 1e-12))

    def get_config(self) -> dict:
        return {"max_value": self.max_value}


def build_model(cfg: ModelConfig, n_features: int, masking: bool, learning_rate: float = 1e-3,
                n_classes: int = 2) -> keras.Model:
    """Build and compile the classifier.

    Args:
        cfg: architecture settings.
        n_features: F, features per timestep.
        masking: add Masking(mask_value=PAD_VALUE) so the padded steps of right-padded rows are skipped.
        learning_rate: Adam learning rate.
        n_classes: k; 2 gives the binary head, k >= 3 the softmax head.
    Returns:
        a compiled keras.Model, input (batch, time, F) float32 -> (batch, 1) p(class 1) or (batch, k) probabilities.
    """
    inputs, x = _inputs(n_features, masking)
    for i in range(cfg.layers):
        cap = SpectralNormCap(cfg.recurrent_norm_max) if cfg.recurrent_norm_max else None
        gru = _gru_layer(cfg, i, cap)
        if cfg.bidirectional:
            gru = keras.layers.Bidirectional(gru, merge_mode=cfg.merge_mode, name=f"bidirectional_{i}")
        x = gru(x)
    if cfg.head != "last":
        x = _pooling(cfg.head)(x)
    width = head_width(n_classes)
    outputs = keras.layers.Dense(width, activation="sigmoid" if width == 1 else "softmax",
                                 name="classifier")(x)  # (batch, 1) or (batch, k)
    model = keras.Model(inputs, outputs, name="gru_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy" if width == 1 else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _inputs(n_features: int, masking: bool):
    """The model input (batch, time, F) of any length, and the tensor after the optional Masking layer."""
    inputs = keras.Input(shape=(None, n_features), name=INPUT_NAME)  # (batch, time, F): any length
    return inputs, keras.layers.Masking(mask_value=PAD_VALUE, name="masking")(inputs) if masking else inputs


def _gru_layer(cfg: ModelConfig, i: int, recurrent_constraint) -> keras.layers.GRU:
    """GRU layer i of the stack as ``cfg`` describes it: sequences out, except the last layer under the last-state head."""
    return keras.layers.GRU(
        cfg.units,
        activation=cfg.activation,
        recurrent_activation=cfg.recurrent_activation,
        use_bias=cfg.use_bias,
        reset_after=cfg.reset_after,
        dropout=cfg.dropout,
        recurrent_dropout=cfg.recurrent_dropout,
        go_backwards=cfg.go_backwards and not cfg.bidirectional,
        recurrent_constraint=recurrent_constraint,
        return_sequences=i < cfg.layers - 1 or cfg.head != "last",
        name=f"gru_{i}",
    )


def _member_of_unit(members: int, units: int) -> np.ndarray:
    return np.repeat(np.arange(members), units // members)  # (units,) which member owns each unit


@keras.saving.register_keras_serializable(package="gru_pipeline")
class BlockDiagonalCap(keras.constraints.Constraint):
    """Keep a GRU recurrent kernel (units, 3 units) block-diagonal, one block per member, and cap each
    block's spectral norm at ``max_value`` (0 = no cap), as ``SpectralNormCap`` does for one GRU.

    The units of member i are i*h .. (i+1)*h - 1 inside each gate (h = units / members), so a member's
    recurrence never reads another member's state.
    """

    def __init__(self, members: int, units: int, max_value: float = 0.0) -> None:
        self.members, self.units, self.max_value = int(members), int(units), float(max_value)
        owner = _member_of_unit(self.members, self.units)
        self.mask = (owner[:, None] == owner[None, :].repeat(3, axis=0).reshape(-1)[None, :]).astype("float32")

    def __call__(self, w):
        w = w * self.mask
        if not self.max_value:
            return w
        k, h = self.members, self.units // self.members
        grid = keras.ops.reshape(w, (k, h, 3, k, h))
        blocks = keras.ops.stack([keras.ops.reshape(grid[i, :, :, i, :], (h, 3 * h)) for i in range(k)])  # (k, h, 3h)
        sigma = keras.ops.max(keras.ops.svd(blocks, compute_uv=False), axis=-1)  # (k,)
        factor = keras.ops.minimum(1.0, self.max_value / (sigma + 1e-12))
        return w * keras.ops.repeat(factor, h)[:, None]  # scales each member's rows, i.e. its block

    def get_config(self) -> dict:
        return {"members": self.members, "units": self.units, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package="gru_pipeline")
class BlockColumns(keras.constraints.Constraint):
    """Keep a Dense kernel (units, members * per_member) so that columns i * per_member .. (i + 1) * per_member - 1
    read only member i's units (per_member = 1: one logit per member; k: one logit per class per member)."""

    def __init__(self, members: int, units: int, per_member: int = 1) -> None:
        self.members, self.units, self.per_member = int(members), int(units), int(per_member)
        owner = _member_of_unit(self.members, self.units)
        column_owner = np.repeat(np.arange(self.members), self.per_member)  # (members * per_member,)
        self.mask = (owner[:, None] == column_owner[None, :]).astype("float32")

    def __call__(self, w):
        return w * self.mask

    def get_config(self) -> dict:
        return {"members": self.members, "units": self.units, "per_member": self.per_member}


def _member_losses(members: int, n_classes: int):
    """Loss and accuracy of a multi-class ensemble: logits (batch, members * k) -> each member's own softmax
    cross-entropy against the one label (batch,) or (batch, 1), averaged over the members."""

    def split(y_true, logits):
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1, 1))  # (batch, 1)
        return keras.ops.repeat(labels, members, axis=1), keras.ops.reshape(logits, (-1, members, n_classes))

    def loss(y_true, logits):  # (batch,)
        labels, z = split(y_true, logits)  # (batch, members), (batch, members, k)
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, z, from_logits=True), axis=1)

    def accuracy(y_true, logits):  # (batch,): the share of members right on each row
        labels, z = split(y_true, logits)
        hit = keras.ops.equal(keras.ops.argmax(z, axis=-1), keras.ops.cast(labels, "int64"))
        return keras.ops.mean(keras.ops.cast(hit, "float32"), axis=1)

    return loss, keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


class MemberEnsemble:
    """``members`` GRU classifiers of units/members units each, trained side by side as one Keras model.

    Training model: [Masking] -> GRU(units) whose recurrent kernel is block-diagonal (``BlockDiagonalCap``)
    -> pooling -> Dense(members * w) whose columns of member i read only member i (``BlockColumns``), w =
    ``head_width(n_classes)``: one logit per member with its own binary cross-entropy (two classes), or k
    logits per member with its own softmax cross-entropy (k classes). The members' gradients never mix, so
    they are independent models that differ by their initial weights. Their input kernels and biases are
    separate columns of the one GRU.

    ``merged()`` is the ordinary architecture of ``build_model``: the same GRU(units) weights and a head whose
    logits are the mean of the members' logits, exactly (member i's logit for class c reads only member i's
    units, so the mean of the members' columns is one column; the biases average), then sigmoid or softmax.
    What is exported, verified and served is that one GRU, so the ensemble costs nothing at inference.
    """

    def __init__(self, cfg: ModelConfig, n_features: int, masking: bool, learning_rate: float = 1e-3,
                 n_classes: int = 2) -> None:
        if not cfg.allows_members(cfg.members):
            raise ValueError(f"{cfg.members} members need one GRU layer, no Bidirectional and units divisible by them")
        self.cfg, self.n_features, self.masking, self.members = cfg, n_features, masking, cfg.members
        self.n_classes, self.width = n_classes, head_width(n_classes)
        inputs, x = _inputs(n_features, masking)
        self.gru = _gru_layer(cfg, 0, BlockDiagonalCap(cfg.members, cfg.units, cfg.recurrent_norm_max))
        x = self.gru(x)
        x = _pooling(cfg.head)(x) if cfg.head != "last" else x
        self.heads = keras.layers.Dense(cfg.members * self.width,
                                        kernel_constraint=BlockColumns(cfg.members, cfg.units, self.width),
                                        name="member_logits")
        self.model = keras.Model(inputs, self.heads(x), name="gru_members")  # (batch, members * w) logits
        # start inside the constraints (Keras applies them only after the first update)
        kernel, recurrent, *bias = self.gru.get_weights()
        self.gru.set_weights([kernel, recurrent * self.gru.recurrent_constraint.mask, *bias])
        dense_kernel, dense_bias = self.heads.get_weights()
        self.heads.set_weights([dense_kernel * self.heads.kernel_constraint.mask, dense_bias])
        if self.width == 1:
            loss, accuracy = (keras.losses.BinaryCrossentropy(from_logits=True),
                              keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"))
        else:
            loss, accuracy = _member_losses(self.members, self.width)
        self.model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss,
                           metrics=[accuracy])

    def member_logits(self, X: np.ndarray) -> np.ndarray:
        """Each member's logits on scaled inputs: (N, members) for two classes, (N, members, k) for k."""
        z = np.asarray(self.model(X, training=False))  # (N, members * w)
        return z if self.width == 1 else z.reshape(len(z), self.members, self.width)

    def merged(self) -> keras.Model:
        """The exported architecture with the members' weights: sigmoid / softmax of the mean of member logits."""
        model = build_model(self.cfg, self.n_features, self.masking, n_classes=self.n_classes)
        model.get_layer("gru_0").set_weights(self.gru.get_weights())
        kernel, bias = self.heads.get_weights()  # (units, members * w), (members * w,)
        units, m, w = kernel.shape[0], self.members, self.width
        # each unit row has one nonzero member block, so the sum over members adds zeros only: exact
        mean_kernel = kernel.reshape(units, m, w).sum(axis=1) / m   # (units, w)
        mean_bias = bias.reshape(m, w).mean(axis=0)                 # (w,)
        model.get_layer("classifier").set_weights([mean_kernel.astype(kernel.dtype), mean_bias.astype(bias.dtype)])
        return model


def _pooling(head: str):
    return (keras.layers.GlobalAveragePooling1D(name="avg_pool") if head == "avg"
            else keras.layers.GlobalMaxPooling1D(name="max_pool"))
