"""Training a head with Keras on precomputed embeddings. `make_trainer(config)` is the factory;
the result is exported into the numpy `DenseHead` that serving runs."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from heads.config import ArchitectureConfig, HeadConfig, TrainingConfig
from heads.network import DenseHead


@dataclass(frozen=True)
class TrainedHead:
    head: DenseHead
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    keras_model: object  # kept so tests can compare Keras and numpy outputs


def balanced_class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=num_classes)
    return {i: float(len(y) / (num_classes * c)) for i, c in enumerate(counts) if c > 0}


class KerasTrainer:
    def __init__(self, architecture: ArchitectureConfig, training: TrainingConfig):
        self.architecture = architecture
        self.training = training

    def build(self, input_dim: int, num_classes: int):
        import keras

        inputs = keras.Input((input_dim,), name="embedding")
        x = inputs
        for i, units in enumerate(self.architecture.hidden_layers):
            x = keras.layers.Dense(units, activation=self.architecture.activation, name=f"hidden_{i}")(x)
            if self.architecture.dropout:
                x = keras.layers.Dropout(self.architecture.dropout, name=f"dropout_{i}")(x)
        logits = keras.layers.Dense(num_classes, name="logits")(x)
        return keras.Model(inputs, logits)

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> TrainedHead:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(self.training.seed)
        tf.config.experimental.enable_op_determinism()
        model = self.build(x_train.shape[1], num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(self.training.learning_rate),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.training.label_smoothing),
            metrics=["accuracy"],
        )
        callbacks = [_progress_bar(self.training.epochs)]
        if self.training.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.training.early_stopping_patience, restore_best_weights=True
                )
            )
        started = time.perf_counter()
        result = model.fit(
            x_train,
            keras.utils.to_categorical(y_train, num_classes),
            validation_data=(x_val, keras.utils.to_categorical(y_val, num_classes)),
            epochs=self.training.epochs,
            batch_size=self.training.batch_size,
            class_weight=balanced_class_weights(y_train, num_classes)
            if self.training.class_weight == "balanced"
            else None,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        seconds = time.perf_counter() - started
        history = {k: [float(v) for v in vs] for k, vs in result.history.items()}
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        head = DenseHead(
            weights=tuple(np.asarray(layer.kernel.numpy(), np.float32) for layer in dense),
            biases=tuple(np.asarray(layer.bias.numpy(), np.float32) for layer in dense),
            activation=self.architecture.activation,
        )
        val_loss = history.get("val_loss", [0.0])
        return TrainedHead(head, history, len(val_loss), int(np.argmin(val_loss)) + 1, seconds, model)


def _progress_bar(epochs: int):
    """A tqdm bar on stderr, one tick per epoch, so stdout stays machine-readable."""
    import keras
    from tqdm import tqdm

    class ProgressBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix(
                loss=f"{logs.get('loss', 0):.3f}",
                val_loss=f"{logs.get('val_loss', 0):.3f}",
                val_acc=f"{logs.get('val_accuracy', 0):.3f}",
            )
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return ProgressBar()


def make_trainer(config: HeadConfig) -> KerasTrainer:
    """The trainer the config asks for (one kind today: a Keras feed-forward head)."""
    return KerasTrainer(config.model, config.training)
