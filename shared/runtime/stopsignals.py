"""SIGTERM and SIGINT as stop requests, from an entry point's first line to its exit.

Python's own dispositions kill the process on SIGTERM and raise KeyboardInterrupt anywhere on
SIGINT. A supervisor that stops its programs a few seconds after spawning them (a shutdown
right after a start) meets agents still importing numpy and astropy, which would die without
a word and without marking their clients row. So an entry point calls :meth:`StopSignals.catch`
before any heavy import: a signal is then only *noted*. Once an asyncio loop runs,
:meth:`StopSignals.delivered_by` routes the signals through the loop (which wakes at once),
and :meth:`StopSignals.listening` hands each one to whoever may act on it, replaying one that
arrived earlier. Handlers only set flags; the work of stopping is done by the code that
listens, outside the handler.

This module imports nothing heavy on purpose (not even asyncio): it is loaded first. What
runs before it (the interpreter's own start, some 30 ms) cannot be covered by Python code, so
the deployment files start programs through ``env --block-signal=TERM,INT``: a signal in that
window waits, blocked, until :meth:`StopSignals.catch` unblocks it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Listener = Callable[[signal.Signals], None]


class StopSignals:
    """The stop requests one process has received, and who hears the next ones."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.count = 0
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def catch(self) -> None:
        """Note SIGTERM and SIGINT instead of dying (call first thing in an entry point).

        Then unblock them: a launcher that blocked them before exec (``env
        --block-signal=TERM,INT``, as the deployment files do) kept any that came during the
        interpreter's own start pending, and they are delivered to the handler now."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_plain_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _on_plain_signal(self, signum: int, frame: Any) -> None:
        self.note(signal.Signals(signum))

    def note(self, sig: signal.Signals) -> None:
        """Record one stop request and pass it on (from a handler: sets flags only)."""
        self.count += 1
        if self.received is None:
            self.received = sig
        if self._listener is not None:
            self._listener(sig)

    @contextlib.contextmanager
    def delivered_by(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """While inside: signals arrive through ``loop`` (so it wakes up for them). On the
        way out the dispositions from before are put back. Nested use is a no-op."""
        if self._loop is not None:
            yield
            return
        before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        self._loop = loop
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.note, sig)
        try:
            yield
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
                signal.signal(sig, before[sig])
            self._loop = None

    @contextlib.contextmanager
    def listening(self, listener: Listener) -> Iterator[None]:
        """While inside: ``listener`` hears each stop request, starting with one that came
        before (so a signal during start-up is not lost). The previous listener is put back."""
        previous, self._listener = self._listener, listener
        if self.received is not None:
            listener(self.received)
        try:
            yield
        finally:
            self._listener = previous


#: The process's stop requests: signal dispositions belong to the whole process.
STOP = StopSignals()
