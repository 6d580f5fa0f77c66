"""An ensemble of dense heads, as one dense head.

Averaging the logits of k members with the same layer sizes and activation is exactly one
`DenseHead` whose layers hold the members side by side: the first layer's weights concatenated
(every member reads the same embedding), deeper hidden layers block-diagonal (member j's units
feed only member j's), and the last layer's weights stacked and divided by k with the biases
averaged, which sums the members' contributions into their mean (members without a hidden layer
are linear: their weights are simply averaged). Serving runs it as any other
head: no new format, no new code path.
"""

from __future__ import annotations

import numpy as np

from heads.network import DenseHead


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    rows, columns = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, columns), np.float32)
    r = c = 0
    for block in blocks:
        out[r : r + block.shape[0], c : c + block.shape[1]] = block
        r, c = r + block.shape[0], c + block.shape[1]
    return out


def merge_members(members: list[DenseHead]) -> DenseHead:
    """One head whose logits are the mean of the members' logits."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    shapes = [tuple(w.shape for w in m.weights) for m in members]
    if any(s != shapes[0] for s in shapes) or any(m.activation != first.activation for m in members):
        raise ValueError("ensemble members must have the same layer sizes and activation")
    if len(members) == 1:
        return first
    k = np.float32(len(members))
    layers = len(first.weights)
    weights, biases = [], []
    for i in range(layers):
        ws = [m.weights[i] for m in members]
        bs = [m.biases[i] for m in members]
        if layers == 1:  # no hidden layer: the members are linear, and so is their mean
            weights.append(np.mean(ws, axis=0, dtype=np.float64).astype(np.float32))
            biases.append(np.mean(bs, axis=0, dtype=np.float64).astype(np.float32))
        elif i == layers - 1:
            weights.append(np.concatenate(ws, axis=0) / k)
            biases.append(np.mean(bs, axis=0, dtype=np.float64).astype(np.float32))
        else:
            weights.append(np.concatenate(ws, axis=1) if i == 0 else _block_diagonal(ws))
            biases.append(np.concatenate(bs))
    return DenseHead(tuple(weights), tuple(biases), first.activation)
