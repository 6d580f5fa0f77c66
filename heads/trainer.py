"""Training heads. `make_trainer(config)` is the factory:

- the dense families ("mlp", "logistic", "ensemble"): Keras on precomputed embeddings, exported
  into the numpy `DenseHead` that serving runs;
- "ngram": softmax regression on the hashed character n-grams of the texts themselves, trained
  with numpy (mini-batch lazy Adam on the sparse rows) through the very forward pass that the
  `NgramHead` serves (heads/ngram.py), so what serves is exactly what was optimised.

Both take (x_train, y_train, x_val, y_val, num_classes), where x is what their head scores:
embeddings for the dense families, texts for "ngram" (`needs_embeddings` tells the pipeline which).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from heads.config import (
    ArchitectureConfig,
    HeadConfig,
    TrainingConfig,
    default_batch_size,
    default_learning_rate,
    large_split_recipe,
)
from heads.ensemble import merge_members
from heads.members import build_model, early_stopping_callback, export_members, member_weights, smoothed_targets
from heads.network import DenseHead, softmax
from heads.ngram import NgramFeaturizer, NgramHead, SparseRows


@dataclass(frozen=True)
class TrainedHead:
    head: DenseHead | NgramHead
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    keras_model: object  # kept so tests can compare Keras and numpy outputs (None for "ngram")
    # The probabilities on the validation split with the weights kept: for "ngram", from the
    # trainer's own forward pass (tests compare them with the exported head's); for the dense
    # families, from the exported head (heads/members.py keeps the weights outside Keras).
    validation_probabilities: np.ndarray


def balanced_class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=num_classes)
    return {i: float(len(y) / (num_classes * c)) for i, c in enumerate(counts) if c > 0}


@dataclass(frozen=True)
class DenseSpec:
    """One dense head family as trained: its layers, and how many members average their logits."""

    family: str  # heads/config.py HEAD_FAMILIES
    hidden_layers: tuple[int, ...]
    activation: str
    dropout: float
    members: int
    learning_rate: float | None  # None: `default_learning_rate` for the batch size
    batch_size: int | None = None  # None: `default_batch_size` for the training rows

    def for_rows(self, training_rows: int) -> DenseSpec:
        """The spec as it trains on `training_rows` rows: its batch size and rate filled in."""
        batch = self.batch_size or default_batch_size(self.family, training_rows)
        rate = self.learning_rate or default_learning_rate(self.family, batch)
        return dataclasses.replace(self, batch_size=batch, learning_rate=rate)

    def describe(self) -> dict:
        return {
            "family": self.family,
            "hidden_layers": list(self.hidden_layers),
            "activation": self.activation,
            "dropout": self.dropout,
            "members": self.members,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
        }


def dense_spec(architecture: ArchitectureConfig, training: TrainingConfig, family: str) -> DenseSpec:
    """The configured architecture as `family` trains it: logistic regression has no hidden layer;
    an ensemble has `ensemble_members` copies of the configured network."""
    hidden = () if family == "logistic" else architecture.hidden_layers
    members = architecture.ensemble_members if family == "ensemble" else 1
    return DenseSpec(
        family,
        tuple(hidden),
        architecture.activation,
        architecture.dropout,
        members,
        training.learning_rate,
        training.batch_size,
    )


# Training steps run per call into TensorFlow: the same updates as one step per call (the weights
# are identical), with the per-step Python overhead paid once per 32 (CLINC150's MLP: 45 -> 34 s).
STEPS_PER_EXECUTION = 32
# What a stalled validation loss multiplies the rate by (training.learning_rate_patience).
LEARNING_RATE_FACTOR = 0.2


@dataclass(frozen=True)
class TrainedMembers:
    """An ensemble trained as one model (heads/members.py): the folded head, and each member alone."""

    ensemble: TrainedHead
    members: tuple[TrainedHead, ...]


class KerasTrainer:
    """A dense head family trained with Keras on precomputed embeddings. An ensemble's members
    (seeded by the config's seed) are trained side by side as one model (heads/members.py) and
    exported as one head (heads/ensemble.py); a single network is the one-member case."""

    needs_embeddings = True

    def __init__(self, spec: DenseSpec, training: TrainingConfig):
        self.spec = spec
        self.training = training

    def build(self, input_dim: int, num_classes: int):
        """The Keras model: embeddings [batch, input_dim] -> logits [batch, members, classes]."""
        spec = self.spec
        return build_model(input_dim, num_classes, spec.members, spec.hidden_layers, spec.activation, spec.dropout)

    @staticmethod
    def _rate_schedule(patience: int, min_delta: float) -> list:
        """Keras's ReduceLROnPlateau on the members' mean validation loss (which `stopping`, the
        callback before it, puts into the logs), or nothing for a constant rate."""
        import keras

        if not patience:
            return []
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=LEARNING_RATE_FACTOR, patience=patience, min_delta=min_delta
            )
        ]

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> TrainedHead:
        return self.fit_members(x_train, y_train, x_val, y_val, num_classes).ensemble

    def fit_members(
        self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> TrainedMembers:
        """Train every member at once; each member's own history, epochs and best weights."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        _use_every_core(tf)
        keras.utils.set_random_seed(self.training.seed)
        tf.config.experimental.enable_op_determinism()
        spec = self.spec.for_rows(len(x_train))
        members, smoothing = spec.members, self.training.label_smoothing
        model = self.build(x_train.shape[1], num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(spec.learning_rate),
            loss=_summed_member_loss(smoothing, num_classes),
            metrics=[
                f(j) for j in range(members) for f in (_member_loss_metric(smoothing, num_classes), _member_accuracy)
            ],
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        min_delta, rate_patience = large_split_recipe(self.training, len(x_train))
        stopping = early_stopping_callback(
            member_weights,
            x_val,
            smoothed_targets(y_val, num_classes, smoothing),
            self.training.early_stopping_patience,
            min_delta,
        )
        weights = (
            np.array([balanced_class_weights(y_train, num_classes).get(i, 0.0) for i in range(num_classes)], np.float32)
            if self.training.class_weight == "balanced"
            else np.ones(num_classes, np.float32)
        )
        started = time.perf_counter()
        result = model.fit(
            x_train,
            keras.utils.to_categorical(y_train, num_classes),
            sample_weight=weights[y_train],
            epochs=self.training.epochs,
            batch_size=spec.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[
                stopping,
                *self._rate_schedule(rate_patience, min_delta),
                _progress_bar(self.training.epochs, self.spec.family),
            ],
        )
        seconds = time.perf_counter() - started
        kept, best_epochs = stopping.kept_weights()
        heads = export_members(kept, self.spec.activation)
        trained = []
        for j, head in enumerate(heads):
            history = {
                "loss": [float(v) for v in result.history[f"member_{j}_loss"]],
                "accuracy": [float(v) for v in result.history[f"member_{j}_accuracy"]],
                "val_loss": [epoch[j] for epoch in stopping.val_loss],
                "val_accuracy": [epoch[j] for epoch in stopping.val_accuracy],
            }
            val_probs = softmax(np.asarray(head.logits(x_val), np.float64))
            epochs = len(history["val_loss"])
            trained.append(TrainedHead(head, history, epochs, best_epochs[j], seconds, model, val_probs))
        if members == 1:
            return TrainedMembers(trained[0], tuple(trained))
        ensemble = merge_members(heads)
        val_probs = softmax(np.asarray(ensemble.logits(x_val), np.float64))
        first = trained[0]  # its history stands for the members'
        folded = TrainedHead(ensemble, first.history, first.epochs_run, first.best_epoch, seconds, model, val_probs)
        return TrainedMembers(folded, tuple(trained))


def _use_every_core(tf) -> None:
    """One TensorFlow op on every core this process may use: left alone, TensorFlow ran the
    training's matrix products on one thread of two here. Once TensorFlow has run an op its threads
    are fixed (an in-process embedder fixes them first, heads/embedding.py), and stay as they are."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
    except RuntimeError:
        pass


def _summed_member_loss(smoothing: float, num_classes: int):
    """Keras loss: per row, the sum over members of their label-smoothed cross-entropies. No
    gradient crosses between members: each is trained as it would be alone."""
    import keras

    def loss(y_true, logits):  # y_true [batch, classes] one-hot; logits [batch, members, classes]
        targets = y_true * (1.0 - smoothing) + smoothing / num_classes
        log_probs = keras.ops.log_softmax(logits, axis=-1)
        return -keras.ops.sum(targets[:, None, :] * log_probs, axis=(1, 2))

    return loss


def _member_loss_metric(smoothing: float, num_classes: int):
    def for_member(j: int):
        import keras

        def member_loss(y_true, logits):
            targets = y_true * (1.0 - smoothing) + smoothing / num_classes
            return -keras.ops.sum(targets * keras.ops.log_softmax(logits[:, j, :], axis=-1), axis=-1)

        member_loss.__name__ = f"member_{j}_loss"
        return member_loss

    return for_member


def _member_accuracy(j: int):
    import keras

    def member_accuracy(y_true, logits):
        return keras.ops.cast(
            keras.ops.argmax(logits[:, j, :], axis=-1) == keras.ops.argmax(y_true, axis=-1), "float32"
        )

    member_accuracy.__name__ = f"member_{j}_accuracy"
    return member_accuracy


def _epoch_bar(epochs: int, what: str = "") -> tqdm:
    """A tqdm bar on stderr, one tick per epoch, so stdout stays machine-readable."""
    desc = f"training {what}" if what else "training"
    return tqdm(total=epochs, desc=desc, unit="epoch", file=sys.stderr, dynamic_ncols=True)


def _show_epoch(bar: tqdm, logs: dict) -> None:
    bar.set_postfix(
        loss=f"{logs.get('loss', 0):.3f}",
        val_loss=f"{logs.get('val_loss', 0):.3f}",
        val_acc=f"{logs.get('val_accuracy', 0):.3f}",
    )
    bar.update(1)


def _progress_bar(epochs: int, what: str):
    """`_epoch_bar` as a Keras callback."""
    import keras

    class ProgressBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = _epoch_bar(epochs, what)

        def on_epoch_end(self, epoch, logs=None):
            _show_epoch(self.bar, logs or {})

        def on_train_end(self, logs=None):
            self.bar.close()

    return ProgressBar()


class LazyAdam:
    """Adam (as Keras computes it) that updates only the weight rows a mini-batch touched.

    A batch of 128 texts touches a few thousand of the n-gram buckets; updating every row at every
    step would cost most of the training time, only to let the decaying momentum of rows whose
    gradient is zero keep moving them. This is the usual "lazy" variant for sparse inputs
    (TensorFlow Addons' LazyAdam); the bias, which every example touches, gets plain Adam.
    """

    def __init__(self, learning_rate: float, weights: np.ndarray, bias: np.ndarray):
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = 0.9, 0.999, 1e-7  # Keras's defaults
        self.m, self.v = np.zeros_like(weights), np.zeros_like(weights)
        self.m_bias, self.v_bias = np.zeros_like(bias), np.zeros_like(bias)
        self.steps = 0

    def step(self, weights: np.ndarray, rows: np.ndarray, grad: np.ndarray, bias: np.ndarray, grad_bias) -> None:
        """One update of weights[rows] (whose gradient is `grad`) and of the bias, in place."""
        self.steps += 1
        t = self.steps
        rate = self.learning_rate * np.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        for param, index, g, m_all, v_all in (
            (weights, rows, grad, self.m, self.v),
            (bias, slice(None), grad_bias, self.m_bias, self.v_bias),
        ):
            m = m_all[index] * self.beta_1
            m += (1 - self.beta_1) * g
            v = v_all[index] * self.beta_2
            v += (1 - self.beta_2) * (g * g)
            m_all[index], v_all[index] = m, v
            step = np.sqrt(v)
            step += self.epsilon
            np.divide(m, step, out=step)
            step *= rate
            param[index] -= step


def sparse_transpose_dot(rows: SparseRows, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rows.T @ g restricted to the columns the rows use: (those columns, sorted; their rows of
    the product). The weight gradient of a batch, without a [buckets, classes] temporary; one
    outer product per row, as in `sparse_dot` (columns are unique within a row, so `+=` on the
    fancy index adds every term)."""
    columns, position = np.unique(rows.indices, return_inverse=True)
    out = np.zeros((len(columns), g.shape[1]), dtype=g.dtype)
    bounds = rows.indptr.tolist()
    for r in range(len(rows)):
        lo, hi = bounds[r], bounds[r + 1]
        out[position[lo:hi]] += rows.values[lo:hi, None] * g[r]
    return columns, out


def cross_entropy(logits: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each row's weighted cross-entropy of softmax(logits) against its target distribution,
    the gradient of their mean with respect to the logits). Targets sum to 1 per row, so the
    gradient of a row's loss is softmax(logits) - targets."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = weights * -(targets * log_probs).sum(axis=1)
    grad = (np.exp(log_probs) - targets) * (weights / len(logits))[:, None]
    return losses, grad


class NgramTrainer:
    """Softmax regression on `NgramFeaturizer` rows, with numpy: deterministic for a seed (the
    seed orders the mini-batches; the weights start at zero), early stopping on the validation
    loss with the best weights restored, label smoothing and class weights as Keras applies them
    (the class weight scales each training example's loss; the validation loss is unweighted)."""

    needs_embeddings = False

    def __init__(self, architecture: ArchitectureConfig, training: TrainingConfig):
        self.featurizer = NgramFeaturizer(architecture.ngram_range, architecture.ngram_buckets)
        self.training = training

    def _targets(self, y: np.ndarray, num_classes: int) -> np.ndarray:
        smoothing = self.training.label_smoothing
        targets = np.full((len(y), num_classes), smoothing / num_classes, np.float32)
        targets[np.arange(len(y)), y] += 1 - smoothing
        return targets

    def fit(
        self, x_train: list[str], y_train: np.ndarray, x_val: list[str], y_val: np.ndarray, num_classes: int
    ) -> TrainedHead:
        started = time.perf_counter()
        train, val = self.featurizer.features(x_train), self.featurizer.features(x_val)
        t_train, t_val = self._targets(y_train, num_classes), self._targets(y_val, num_classes)
        example_weight = np.ones(num_classes, np.float32)
        if self.training.class_weight == "balanced":
            for label, weight in balanced_class_weights(y_train, num_classes).items():
                example_weight[label] = weight
        head = NgramHead(
            self.featurizer,
            np.zeros((self.featurizer.buckets, num_classes), np.float32),
            np.zeros(num_classes, np.float32),
        )
        optimizer = LazyAdam(self.training.learning_rate, head.weights, head.bias)
        batch_size = self.training.batch_size or default_batch_size("ngram", len(train))
        rng = np.random.default_rng(self.training.seed)
        patience = self.training.early_stopping_patience
        history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
        best_loss, best = np.inf, (head.weights.copy(), head.bias.copy())
        bar = _epoch_bar(self.training.epochs)
        for _ in range(self.training.epochs):
            loss_sum = correct = 0.0
            order = rng.permutation(len(train))
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                rows = train.take(batch)
                logits = head.logits(rows)
                losses, grad_logits = cross_entropy(logits, t_train[batch], example_weight[y_train[batch]])
                loss_sum += float(losses.sum())
                correct += float((logits.argmax(axis=1) == y_train[batch]).sum())
                touched, grad = sparse_transpose_dot(rows, grad_logits)  # through logits = x @ W + b
                optimizer.step(head.weights, touched, grad, head.bias, grad_logits.sum(axis=0))
            val_logits = head.logits(val)
            val_loss = float(cross_entropy(val_logits, t_val, np.ones(len(y_val), np.float32))[0].mean())
            history["loss"].append(loss_sum / len(train))
            history["accuracy"].append(correct / len(train))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(float((val_logits.argmax(axis=1) == y_val).mean()))
            _show_epoch(bar, {k: v[-1] for k, v in history.items()})
            if val_loss < best_loss:
                best_loss, best = val_loss, (head.weights.copy(), head.bias.copy())
            elif patience and len(history["val_loss"]) - 1 - int(np.argmin(history["val_loss"])) >= patience:
                break
        bar.close()
        if patience:  # as Keras's EarlyStopping(restore_best_weights=True)
            head.weights[:], head.bias[:] = best
        seconds = time.perf_counter() - started
        val_probs = softmax(head.logits(val))
        epochs = len(history["val_loss"])
        return TrainedHead(head, history, epochs, int(np.argmin(history["val_loss"])) + 1, seconds, None, val_probs)


def make_trainers(config: HeadConfig) -> dict[str, KerasTrainer | NgramTrainer]:
    """The trainer of each head family the config's model.type asks for, by family name."""
    if config.model.type == "ngram":
        return {"ngram": NgramTrainer(config.model, config.training)}
    return {
        family: KerasTrainer(dense_spec(config.model, config.training, family), config.training)
        for family in config.families
    }
