"""The router's gunicorn worker: gthread, with new connections spread over the workers.

All workers poll the one listening socket, and a burst of new connections (a load balancer or a
client pool opening several at once) wakes them all; the one that runs first used to accept the
whole burst before the others were scheduled. Keep-alive connections stay with the worker that
accepted them, so that worker then served all their requests on one core's worth of GIL while
the others idled: a closed loop of 8 connections measured 1,060 answers/s instead of 2,100-2,300
(2 workers, 1 run in 15), and with 3 or 4 workers most attempts left a worker without any.
After each accept, this worker pauses ACCEPT_PAUSE_S, which lets a worker woken by the same
burst take the next connection.

The pause is on the worker's event loop, so clients that open a connection per request pay for
it: a worker accepts at most about 1,000 new connections a second, and a request that becomes
ready on that worker meanwhile waits up to 1 ms more. Load balancers and client pools keep their
connections; health checks open one every few seconds.
"""

from __future__ import annotations

import time

from gunicorn.workers.gthread import ThreadWorker

ACCEPT_PAUSE_S = 0.001  # a new connection costs its worker's loop 1 ms; kept-alive ones nothing


class SpreadingThreadWorker(ThreadWorker):
    def accept(self, listener):
        super().accept(listener)
        time.sleep(ACCEPT_PAUSE_S)
