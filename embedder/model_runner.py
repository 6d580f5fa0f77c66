"""Runs one padded model call, by the cheapest way ready for its shape.

Calls of several texts run a copy of the model's function with the weights frozen into constants
(TensorFlow's own freezing): oneDNN then prepares each weight matrix once instead of on every
call, which measured about 1.5x faster for calls of 32 texts. The copy costs the weights' size
in memory once more (about 90 MB for MiniLM; in the bf16 mode the bfloat16 graph's, and the
compiled functions are checked against the variables).

A call of one short text is mostly fixed cost: a graph function dispatches some four hundred
TensorFlow ops one by one, and for a 16-token phrase that dispatch costs more than the
arithmetic. XLA fuses the graph into a few kernels, so single-text calls run XLA-compiled
functions instead. XLA compiles once per input shape, so the width is bucketed (`xla_widths`:
steps of 4 tokens up to 32, of 8 up to 64, then 16, 32, ...: a phrase is padded by at most 3
tokens or a quarter of its width) and each bucket is compiled once, in a background thread, the first
time it is needed; until it is ready, that call runs the graph, and no request ever waits for a
compiler. Every compiled function is checked against the float32 graph on one input before it is
used. Calls of several texts always run the graph: from 8 texts on XLA measured no faster, and
every extra shape costs compilation (about 0.6 CPU-s each); a few texts run as single calls
instead (see embedder/call_plan.py).

The XLA functions read the model's variables instead of the frozen constants: XLA copies
constants into each compiled function, about 180 MB per shape for MiniLM (1.4 GB for the 8 shapes
of 16-token steps), against about 2 MB per shape reading the one set of variables. The constants
ran each call 7-12% faster, but the fine buckets that the saved memory pays for cut more padding
than that (a 12-token phrase at width 12 instead of 16).

With a bfloat16 graph (`graph_signature`, see embedder/bert.py) calls of several texts run their
MatMuls in bfloat16, about twice as fast on a CPU with AMX; single texts still run XLA in float32,
which was as fast as the bfloat16 graph for them.
"""

from __future__ import annotations

import atexit
import bisect
import functools
import logging
import os
import queue
import threading

import numpy as np

log = logging.getLogger(__name__)

# The narrowest bucket, and the step between buckets up to 8 times it; past that each doubling of
# the width doubles the step, so no text is padded by more than 3 tokens or a quarter of its width.
MIN_WIDTH_STEP = 4
# A compiled function must agree with the graph to this much on its check input.
CHECK_TOLERANCE = 1e-4


@functools.lru_cache(maxsize=8)
def xla_widths(max_tokens: int) -> tuple[int, ...]:
    """The bucket widths of single-text XLA calls up to `max_tokens`, narrowest first: steps of 4
    up to 32, 8 up to 64, 16 up to 128, 32 up to 256, and `max_tokens` itself last, so that every
    text of at most `max_tokens` tokens has a bucket (none when it is 0)."""
    widths: list[int] = []
    width = 0
    while True:
        width += max(MIN_WIDTH_STEP, 2 ** (width.bit_length() - 3))
        if width >= max_tokens:
            return (*widths, max_tokens) if max_tokens > 0 else ()
        widths.append(width)


def xla_shape(rows: int, width: int, max_tokens: int) -> tuple[int, int] | None:
    """The bucketed shape a call of `rows` x `width` tokens runs at under XLA, or None when it
    does not run under XLA (several texts, or wider than every bucket up to `max_tokens`)."""
    if rows != 1:
        return None
    widths = xla_widths(max_tokens)
    index = bisect.bisect_left(widths, width)
    return (1, widths[index]) if index < len(widths) else None


def pad_to(ids: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """ids and mask padded with masked-out zeros to `shape`: the extra columns are ignored by
    attention and pooling."""
    padded_ids = np.zeros(shape, np.int32)
    padded_mask = np.zeros(shape, np.int32)
    padded_ids[: ids.shape[0], : ids.shape[1]] = ids
    padded_mask[: mask.shape[0], : mask.shape[1]] = mask
    return padded_ids, padded_mask


def freeze_weights(signature, output: str = "embeddings"):
    """`signature` with its variables replaced by constants (TensorFlow's own freezing, as used by
    its converters; `signature` itself when this TensorFlow lacks it), as a function of (ids, mask)
    returning its `output` tensor."""
    try:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        frozen = convert_variables_to_constants_v2(signature)
    except ImportError:  # pragma: no cover - the module is internal to TensorFlow
        log.warning("cannot freeze the weights with this TensorFlow; calls run the function as loaded")
        frozen = signature
    # The frozen function returns its outputs as a list, flattened as tf.nest flattens a dict: in
    # the order of the sorted names.
    outputs = signature.structured_outputs
    position = sorted(outputs).index(output) if isinstance(outputs, dict) else 0
    return embeddings_of(frozen, output, position)


def embeddings_of(signature, output: str = "embeddings", position: int = 0):
    """`signature` as a function of (ids, mask) returning its `output` tensor (the `position`th
    where it returns a list)."""

    def embeddings(ids, mask):
        out = signature(input_ids=ids, attention_mask=mask)
        return out[output] if isinstance(out, dict) else out[position]

    return embeddings


class ModelRunner:
    """Thread-safe: calls may run from several lanes at once while shapes compile."""

    def __init__(self, signature, *, xla_max_tokens: int, graph_signature=None, output: str = "embeddings"):
        """`signature`: the model's float32 function, which XLA compiles; `graph_signature`: the
        function calls that do not run under XLA use (default: `signature`); `output`: the output
        a call returns (`layer_embeddings`: every layer's pool, embedder/features.py)."""
        from embedder.encoder import import_tensorflow

        tf, _ = import_tensorflow()
        self._tf = tf
        self._variables = embeddings_of(signature, output)  # reads the variables: what XLA compiles
        self._graph = freeze_weights(signature if graph_signature is None else graph_signature, output)
        # What a compiled function is checked against: the float32 graph that would serve instead,
        # or in a reduced-precision mode the variables (no second frozen copy for a check).
        self._check_reference = self._graph if graph_signature is None else self._variables
        self.xla_max_tokens = xla_max_tokens
        self._xla = None  # built by the compiler thread on its first shape
        self._compiled: dict[tuple[int, int], object] = {}
        self._failed: set[tuple[int, int]] = set()  # keep the graph function: no retry
        self._requested: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def shapes(self) -> list[tuple[int, int]]:
        """Every bucketed shape that runs under XLA, narrowest first."""
        return [(1, width) for width in xla_widths(self.xla_max_tokens)]

    @property
    def compiled_shapes(self) -> list[tuple[int, int]]:
        return sorted(self._compiled)

    @property
    def failed_shapes(self) -> list[tuple[int, int]]:
        """Shapes whose compilation raised or whose compiled function failed its check."""
        return sorted(self._failed)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """float32 [rows, width of the output] for one call's padded ids and mask."""
        rows, width = ids.shape
        shape = xla_shape(rows, width, self.xla_max_tokens)
        compiled = self._compiled.get(shape) if shape is not None else None
        if compiled is None:
            if shape is not None:
                self.prepare([shape])
            return self._run_graph(ids, mask)
        padded_ids, padded_mask = pad_to(ids, mask, shape)
        return compiled(self._tf.constant(padded_ids), self._tf.constant(padded_mask)).numpy()[:rows]

    def compiled_for(self, width: int) -> bool:
        """Whether a single text of `width` tokens runs a compiled function now."""
        return xla_shape(1, width, self.xla_max_tokens) in self._compiled

    def prepare(self, shapes: list[tuple[int, int]]) -> None:
        """Compile these bucketed shapes in the background, each once."""
        if self.xla_max_tokens <= 0:
            return
        with self._lock:
            new = [s for s in shapes if s not in self._requested]
            if not new or self._closed:
                return
            self._requested.update(new)
            self._idle.clear()
            for shape in new:
                self._queue.put(shape)
            if self._thread is None:
                self._thread = threading.Thread(target=self._compile_loop, name="xla-compiler", daemon=True)
                self._thread.start()
                # A process must not exit while TensorFlow compiles in a daemon thread (it aborts).
                atexit.register(self.close)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Block until every requested shape is compiled (or failed); False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> bool:
        """Start no more compilations and wait for the one under way; False if it outlasts `timeout`."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return True
        self._queue.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    def _run_graph(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._graph(self._tf.constant(ids), self._tf.constant(mask)).numpy()

    def _run_check_reference(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._check_reference(self._tf.constant(ids), self._tf.constant(mask)).numpy()

    def _compile_loop(self) -> None:
        # A compilation takes 1-15 s of CPU: below the lanes, which serve requests meanwhile.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            pass
        while True:
            shape = self._queue.get()
            if shape is None or self._closed:
                self._idle.set()
                return
            try:
                self._compile(shape)
            except Exception:  # noqa: BLE001 - a shape that fails to compile keeps running the graph
                log.exception("XLA compilation of shape %s failed; that shape keeps the graph function", shape)
                self._failed.add(shape)
            with self._lock:
                if self._queue.empty():
                    self._idle.set()

    def _xla_function(self):
        if self._xla is None:
            self._xla = self._tf.function(self._variables, jit_compile=True)
        return self._xla

    def _compile(self, shape: tuple[int, int]) -> None:
        tf = self._tf
        spec = tf.TensorSpec(shape, tf.int32)
        function = self._xla_function().get_concrete_function(spec, spec)
        # A check input: distinct tokens, the right half of the columns masked out.
        ids = (1000 + np.arange(shape[0] * shape[1]) % 20000).reshape(shape).astype(np.int32)
        mask = np.zeros(shape, np.int32)
        mask[:, : max(1, shape[1] // 2)] = 1
        got = function(tf.constant(ids), tf.constant(mask)).numpy()  # XLA compiles on the first run
        error = float(np.abs(got - self._run_check_reference(ids, mask)).max())
        if error > CHECK_TOLERANCE:
            log.error("XLA function for shape %s differs from the float32 graph by %.2g; not used", shape, error)
            self._failed.add(shape)
            return
        self._compiled[shape] = function
        log.info("XLA function ready for calls of shape %s", shape)
