"""Start-up work that SIGTERM and SIGINT end at once.

uvicorn's signal handlers only set a flag, read once the lifespan start-up has finished
(Kludex/uvicorn#1301, #2751): a fetch from an MLflow server that does not answer kept the
process deaf to SIGTERM until MLflow's client gave up. :func:`stoppable` runs such work in a
worker thread while the event loop listens for the two signals; either one ends the process
with one log line and the status a shell reports for it (128 + the signal's number).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The status of a process stopped by ``signum`` (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + signum


async def stoppable(
    work: Callable[[], T], *, doing: str, on_stop: Callable[[], None] | None = None
) -> T:
    """``work()``'s result; SIGTERM or SIGINT meanwhile call ``on_stop`` (what ``work`` would
    have cleaned up: it is abandoned), log "start stopped while <doing>" and end the process
    (:func:`exit_status`) without waiting for ``work``.

    Outside the main thread (the test client runs the lifespan in its own thread) no signal
    reaches the loop: ``work`` is simply called.
    """
    if threading.current_thread() is not threading.main_thread():
        return work()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    stopped: asyncio.Future[int] = loop.create_future()

    def run() -> None:
        try:
            outcome = work()
        except BaseException as err:  # handed to the awaiting coroutine, raised there
            loop.call_soon_threadsafe(_settle, done, None, err)
        else:
            loop.call_soon_threadsafe(_settle, done, outcome, None)

    # The loop's handlers wake it through its self-pipe (a Python-level handler would wait for
    # the main thread to run bytecode); the previous ones (uvicorn's) come back afterwards.
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _settle, stopped, sig, None)
    try:
        # A daemon: the process may end while the work is still blocked in a socket read.
        threading.Thread(target=run, name="start-up", daemon=True).start()
        await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
    if stopped.done():
        if on_stop is not None:
            on_stop()
        _stop(stopped.result(), doing)
    return done.result()


def _settle(future: asyncio.Future[T], result: T, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _stop(signum: int, doing: str) -> None:
    """One log line, then the process ends: no lifespan failure (its traceback in the log), no
    interpreter shutdown waiting for, or tripping over, the worker thread."""
    name = signal.Signals(signum).name
    logger.warning(
        "start stopped while %s: %s received",
        doing,
        name,
        extra={"fields": {"signal": name, "exit_status": exit_status(signum)}},
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status(signum))
