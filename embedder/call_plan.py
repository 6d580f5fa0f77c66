"""How one batch of texts becomes model calls: sorted by token count, cut into calls of similar
length under a cap on padded tokens, and spread over the model lanes.

A call pads every text to its own longest, so texts of very different lengths never share one
(the approach of text-embeddings-inference's `max_batch_tokens`).
"""

from __future__ import annotations

import numpy as np

# What one extra model call costs, in padded tokens: about 8-10 ms of fixed cost per call against
# about 0.2 ms per padded token on one thread (all-MiniLM-L6-v2, measured with one intra-op thread
# per lane; small calls run XLA-compiled and cost less). The ratio is what counts: too low and a
# batch is cut into calls that cost more than the padding they save.
CALL_COST_TOKENS = 48
DEFAULT_MAX_BATCH_TOKENS = 8192
# Only a call of at least this many padded tokens is halved to feed another lane: two small graph
# calls at once ran slower than one after the other (measured: 2 single phrases took 22 ms on two
# lanes against 17 ms on one; 16 phrases, about 220 tokens, took 77 ms against 93 ms).
MIN_SPLIT_TOKENS = 192


def plan_calls(
    lengths: np.ndarray, *, max_tokens: int = DEFAULT_MAX_BATCH_TOKENS, min_calls: int = 1, singles_up_to: int = 0
) -> list[np.ndarray]:
    """The texts of one batch (their token counts) cut into model calls of similar lengths.

    A batch of at most `singles_up_to` texts is one call per text: where single
    texts run XLA-compiled, a few of them one by one, spread over the lanes, cost far less than one
    graph call holding them all (measured with MiniLM on two lanes: 2 phrases of 12 tokens in
    4.5 ms against 9.0 ms, 4 in 7.9 ms against 11.6 ms).

    Texts are sorted by length and cut where the padding saved is worth more than the fixed cost
    of another call (CALL_COST_TOKENS); no call holds more than `max_tokens` padded tokens (one
    text always fits). The cut is optimal for that cost: a dynamic programme over the sorted
    lengths, O(n^2) for n texts, vectorised over the cut point. Then, while there are fewer
    calls than `min_calls` (the lanes that can run at once), the call with the most padded
    tokens is halved if it holds at least MIN_SPLIT_TOKENS, so no lane idles while another works
    through a large batch.
    Returns the indices of each call's texts, shortest call first."""
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(lengths, kind="stable")
    if n <= singles_up_to:
        return [order[i : i + 1] for i in range(n)]
    longest = np.asarray(lengths, dtype=np.int64)[order]  # a call of sorted[i:j] pads to longest[j - 1]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n)
    for j in range(1, n + 1):
        padded = (j - starts[:j]) * longest[j - 1]
        cost = best[:j] + CALL_COST_TOKENS + padded
        cost[padded > max_tokens] = np.inf
        cost[j - 1] = best[j - 1] + CALL_COST_TOKENS + longest[j - 1]  # a text alone always fits
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    bounds, j = [], n
    while j > 0:
        bounds.append((int(cut[j]), j))
        j = int(cut[j])
    bounds.reverse()
    while len(bounds) < min_calls:
        splittable = [b for b in bounds if b[1] - b[0] >= 2 and (b[1] - b[0]) * longest[b[1] - 1] >= MIN_SPLIT_TOKENS]
        if not splittable:
            break
        start, stop = max(splittable, key=lambda b: (b[1] - b[0]) * longest[b[1] - 1])
        middle = (start + stop) // 2
        i = bounds.index((start, stop))
        bounds[i : i + 1] = [(start, middle), (middle, stop)]
    return [order[start:stop] for start, stop in bounds]
