"""Several dense heads trained side by side as ONE Keras model (heads/trainer.py `KerasTrainer`).

An ensemble's members are independent networks of the same shape from different initialisations.
Trained one after another, each pays Keras's per-step overhead and runs matrix products too small
to keep both cores busy. Here every layer holds all members at once, its kernel shaped
[members, in, out]: one forward and one backward pass per batch serve them all. The loss is the
sum of the members' own losses, so no gradient crosses from one member to another: each learns
exactly as it would alone, seeing the same batches, with its own initial weights and dropout masks.

Each member keeps its own early stopping (`MemberEarlyStopping`): its validation loss is watched
on its own, its best weights are kept, and training ends when every member has waited `patience`
epochs without improving. `export_members` then gives each member's kept weights as a numpy
`DenseHead`; heads/ensemble.py folds them into the one head that serves.
"""

from __future__ import annotations

import numpy as np

from heads.network import DenseHead


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def smoothed_targets(y: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """One-hot rows with label smoothing, as Keras's CategoricalCrossentropy applies it."""
    targets = np.full((len(y), num_classes), smoothing / num_classes, np.float32)
    targets[np.arange(len(y)), y] += 1.0 - smoothing
    return targets


def member_losses(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[members]: each member's mean cross-entropy; logits [n, members, classes], targets [n, classes]."""
    return -(targets[:, None, :] * log_softmax(np.asarray(logits, np.float64))).sum(axis=-1).mean(axis=0)


def build_model(input_dim: int, num_classes: int, members: int, hidden: tuple[int, ...], activation: str, dropout):
    """A Keras model from embeddings [batch, input_dim] to logits [batch, members, classes]."""
    import keras

    layer_class = _member_dense_class()
    inputs = keras.Input((input_dim,), name="embedding")
    x = inputs
    for i, units in enumerate(hidden):
        x = layer_class(members, units, activation=activation, name=f"hidden_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    logits = layer_class(members, num_classes, name="logits")(x)
    return keras.Model(inputs, logits)


def member_layers(model) -> list:
    return [layer for layer in model.layers if hasattr(layer, "members")]


def member_weights(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel [members, in, out], bias [members, out]) of every layer, copied out of Keras."""
    return [(np.array(layer.kernel.numpy()), np.array(layer.bias.numpy())) for layer in member_layers(model)]


def export_members(weights: list[tuple[np.ndarray, np.ndarray]], activation: str) -> list[DenseHead]:
    """Each member as a numpy `DenseHead`, from `member_weights`."""
    members = weights[0][0].shape[0]
    return [
        DenseHead(
            tuple(np.asarray(kernel[j], np.float32) for kernel, _ in weights),
            tuple(np.asarray(bias[j], np.float32) for _, bias in weights),
            activation,
        )
        for j in range(members)
    ]


def _member_dense_class():
    """The Keras layer class, made on first use so that importing this module needs no Keras."""
    global _MEMBER_DENSE
    if _MEMBER_DENSE is None:
        import keras

        class MemberDense(keras.layers.Layer):
            """`members` Dense layers side by side: [batch, in] (the shared input) or
            [batch, members, in] -> [batch, members, out], member j's outputs from member j's inputs."""

            def __init__(self, members: int, units: int, activation: str | None = None, **kwargs):
                super().__init__(**kwargs)
                self.members, self.units = members, units
                self.activation = keras.activations.get(activation)

            def build(self, input_shape):
                fan_in = input_shape[-1]
                # Glorot uniform per member (a [members, in, out] kernel would otherwise count
                # the members into the fans and start every member too small).
                limit = float(np.sqrt(6.0 / (fan_in + self.units)))
                self.kernel = self.add_weight(
                    name="kernel",
                    shape=(self.members, fan_in, self.units),
                    initializer=keras.initializers.RandomUniform(-limit, limit),
                )
                self.bias = self.add_weight(name="bias", shape=(self.members, self.units), initializer="zeros")

            def call(self, x):
                equation = "bi,mio->bmo" if len(x.shape) == 2 else "bmi,mio->bmo"
                return self.activation(keras.ops.einsum(equation, x, self.kernel) + self.bias)

        _MEMBER_DENSE = MemberDense
    return _MEMBER_DENSE


_MEMBER_DENSE = None


def early_stopping_callback(model_weights_of, x_val, targets_val: np.ndarray, patience: int, min_delta: float = 0.0):
    """`MemberEarlyStopping` (a Keras callback): Keras's EarlyStopping(restore_best_weights=True)
    for each member on its own. After each epoch, every member's validation loss (label-smoothed,
    unweighted, as Keras's val_loss) and accuracy. A member has stalled once `patience` epochs
    have passed since its loss last fell more than `min_delta` below its reference (the loss of
    that last such fall); training stops when every member has stalled. Each member keeps the
    weights of its lowest validation loss, however small the fall that reached it (Keras would
    keep those of the last fall larger than min_delta). Patience 0: no early stopping, the last
    weights kept."""
    import keras

    y_val = targets_val.argmax(axis=1)

    class MemberEarlyStopping(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.val_loss: list[list[float]] = []  # [epoch][member]
            self.val_accuracy: list[list[float]] = []
            self.best: list[tuple[np.ndarray, np.ndarray]] = []
            self.best_loss = self.reference = np.array([])
            self.best_epoch = self.reference_epoch = np.array([], int)

        def on_epoch_end(self, epoch, logs=None):
            # direct calls, chunked: Keras's predict sets up its input pipeline again every epoch
            chunks = [self.model(x_val[i : i + 4096], training=False) for i in range(0, len(x_val), 4096)]
            logits = np.concatenate([np.asarray(chunk) for chunk in chunks])
            losses = member_losses(logits, targets_val)
            self.val_loss.append(losses.tolist())
            self.val_accuracy.append((logits.argmax(axis=-1) == y_val[:, None]).mean(axis=0).tolist())
            if logs is not None:  # what the progress bar shows: the members' mean
                logs["val_loss"], logs["val_accuracy"] = float(losses.mean()), float(np.mean(self.val_accuracy[-1]))
            if not patience:
                return
            weights = model_weights_of(self.model)
            if not self.best:
                self.best, self.best_loss, self.reference = weights, losses, losses
                self.best_epoch, self.reference_epoch = np.zeros(len(losses), int), np.zeros(len(losses), int)
                return
            better = losses < self.best_loss
            for (best_kernel, best_bias), (kernel, bias) in zip(self.best, weights):
                best_kernel[better], best_bias[better] = kernel[better], bias[better]
            self.best_loss = np.where(better, losses, self.best_loss)
            self.best_epoch[better] = epoch
            moved = losses < self.reference - min_delta
            self.reference = np.where(moved, losses, self.reference)
            self.reference_epoch[moved] = epoch
            if (epoch - self.reference_epoch >= patience).all():
                self.model.stop_training = True

        def kept_weights(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
            """(each member's kept weights, the 1-based epoch they are from)."""
            if not patience:
                return model_weights_of(self.model), [len(self.val_loss)] * len(self.val_loss[0])
            return self.best, (self.best_epoch + 1).tolist()

    return MemberEarlyStopping()
