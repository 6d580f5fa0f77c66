"""The open-loop client: the router's own time read from each answer, and where the slowest
answers' time went."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from loadtests.open_loop import Client, Phase, timed

ANSWER = b'{"ok":true}'


async def _answering_server(headers: bytes):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _phase_against(headers: bytes, requests: int) -> Phase:
    async def run() -> Phase:
        server = await _answering_server(headers)
        port = server.sockets[0].getsockname()[1]
        client, phase = Client("127.0.0.1", port, "key", ["m"]), Phase()
        for _ in range(requests):
            await timed(client, phase, "m", "hello", time.perf_counter())
        client.close()
        server.close()
        await server.wait_closed()
        phase.seconds = 1.0
        return phase

    return asyncio.run(run())


def test_the_routers_own_time_is_read_from_each_answer():
    phase = _phase_against(b"X-Total-Time-Ms: 0.250\r\nContent-Type: application/json\r\n", 5)
    assert phase.app_ms == [0.25] * 5 and len(phase.latencies) == 5 and phase.errors == {}
    summary = phase.summary()
    assert summary["app_p50_ms"] == summary["app_p99_ms"] == 0.25
    assert 0.0 <= summary["slowest_1pct_outside_app"] < 1.0


def test_a_server_that_does_not_say_its_time_gives_no_split():
    phase = _phase_against(b"Content-Type: application/json\r\n", 3)
    assert phase.app_ms == [] and len(phase.latencies) == 3
    summary = phase.summary()
    assert summary["app_p50_ms"] is None and summary["slowest_1pct_outside_app"] is None


def test_the_slowest_answers_outside_share_counts_only_them():
    phase = Phase(latencies=[0.001] * 99 + [0.100], app_ms=[0.5] * 99 + [10.0], answered_at=[0.0] * 100, seconds=1.0)
    phase.send_lags = [0.0] * 100
    summary = phase.summary()
    # the slowest answer (100 ms) spent 10 ms in the app: 90% outside
    assert summary["slowest_1pct_outside_app"] == 0.9
    assert summary["app_p50_ms"] == 0.5 and summary["app_p99_ms"] == round(float(np.percentile(phase.app_ms, 99)), 2)
