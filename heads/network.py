"""The head: a feed-forward network on sentence embeddings, evaluated with numpy only.

This module is the head's definition shared by training and serving: the Keras trainer builds
its layers from the same activation names, and exports its weights into `DenseHead`, which
routers run without TensorFlow or Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, far inside the 1e-5 agreement
    # required between serving and Keras.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),  # exact GELU, as Keras computes it
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class DenseHead:
    """Hidden Dense layers with one activation, then a linear layer and softmax."""

    needs_embeddings: ClassVar[bool] = True  # it scores sentence embeddings (see heads/ngram.py for one that does not)

    weights: tuple[np.ndarray, ...]  # [in, out] per layer
    biases: tuple[np.ndarray, ...]
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("a head needs one bias per weight matrix and at least one layer")
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.ndim != 2 or b.shape != (w.shape[1],):
                raise ValueError(f"layer {i}: weight {w.shape} and bias {b.shape} do not fit")
            if i and self.weights[i - 1].shape[1] != w.shape[0]:
                raise ValueError(f"layer {i}: input {w.shape[0]} does not match previous output")

    @property
    def input_dim(self) -> int:
        return self.weights[0].shape[0]

    @property
    def num_classes(self) -> int:
        return self.weights[-1].shape[1]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, classes] before softmax, for float32 embeddings [n, input_dim]."""
        act = ACTIVATIONS[self.activation]
        h = np.asarray(x, dtype=np.float32)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = act(h @ w + b)
        return h @ self.weights[-1] + self.biases[-1]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, classes] for float32 embeddings [n, input_dim]."""
        return softmax(self.logits(x)).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for an .npz file: W0, b0, W1, b1, ...

        Weight matrices are written in column-major (Fortran) order: a router reads them in place
        (heads/mapped_weights.py), and a single text's `x @ W` then runs as dot products over
        contiguous columns. With the weights out of the CPU caches, as they are for most answers
        of a router with many heads, a single text's forward pass through [1152, 256] + [256, 151]
        float32 weights took 0.81-0.90 of the row-major time (202-244 against 221-285 us, an AVX2
        EPYC), and a warm batch of 8 took 1.11-1.18 of it (`make bench-forward`). Either order
        loads and serves."""
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"W{i}"], out[f"b{i}"] = np.asfortranarray(w), b
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], activation: str) -> DenseHead:
        n = len([k for k in arrays if k.startswith("W")])
        if set(arrays) != {f"{p}{i}" for i in range(n) for p in "Wb"}:
            raise ValueError(f"unexpected arrays {sorted(arrays)}")
        return cls(
            tuple(np.asarray(arrays[f"W{i}"], np.float32) for i in range(n)),
            tuple(np.asarray(arrays[f"b{i}"], np.float32) for i in range(n)),
            activation,
        )
