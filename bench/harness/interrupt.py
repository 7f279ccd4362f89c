"""Stopping a run on request: the first SIGINT/SIGTERM asks it to stop, a second one exits at once.

    from bench.harness import interrupt

    with interrupt.handling_signals():   # the train loop (bench.harness.train) holds this
        ...
        interrupt.check_stop()           # between the pieces of a long step: raises StopRequested

The first SIGINT or SIGTERM (and SIGUSR2, Slurm's warning before a job's time limit under
submitit) sets a flag: the train loop sees it between steps, and a long step (a Levenberg-Marquardt
step's Gauss-Newton products, its trial losses) sees it through check_stop(), so it is honoured
within seconds. The trainer drops the step in flight, checkpoints the last completed one and
records the run as interrupted; running it again resumes to the same result.

A second SIGINT or SIGTERM exits the process at once with status 130, even in the middle of one
long torch call: a watcher thread wakes on the signal (signal.set_wakeup_fd) while the main thread
is still inside the call (torch releases the GIL there). Every write of the suite is atomic
(bench.harness.records.atomic_write), so the last checkpoint on disk stays loadable.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator

EXIT_STATUS = 130  # what a shell reports for a process ended by SIGINT
# a second one of these exits at once; SIGUSR2 only ever asks (submitit may send SIGTERM after it)
HARD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIGNALS = HARD_SIGNALS + ((signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ())


class StopRequested(Exception):
    """A stop was requested (SIGINT/SIGTERM, or request_stop()) while a long step was in flight."""


_lock = threading.Lock()
_requested = False
_hard_count = 0  # SIGINT/SIGTERM received since the last clear()
_depth = 0  # nested handling_signals() contexts; the outermost installs and restores
_old_handlers: dict = {}
_old_wakeup_fd = -1
_watcher_fd = None  # the write end given to set_wakeup_fd (the watcher thread reads the other end)
_watching = False  # set_wakeup_fd took it: the watcher thread counts the signals
_before_exit: list[Callable[[], None]] = []  # at_hard_exit's callbacks


def request_stop() -> None:
    """Ask the run in this process to stop (what the first signal does)."""
    global _requested
    _requested = True


def clear() -> None:
    """Forget a requested stop and the signals counted so far."""
    global _requested, _hard_count
    with _lock:
        _requested, _hard_count = False, 0


def stop_requested() -> bool:
    return _requested


def check_stop() -> None:
    """Raise StopRequested if a stop was requested: call it between the pieces of a long step."""
    if _requested:
        raise StopRequested("stop requested")


def _received(signum: int) -> None:
    """Count one signal: the first asks to stop, a second SIGINT/SIGTERM exits at once."""
    global _hard_count
    with _lock:
        if signum in HARD_SIGNALS:
            _hard_count += 1
            if _hard_count >= 2:
                for callback in list(_before_exit):
                    try:
                        callback()
                    except Exception:  # exiting at once comes first
                        pass
                os._exit(EXIT_STATUS)
    request_stop()


def _handler(signum, frame) -> None:
    # the watcher thread has counted it already (it reads the byte the C-level handler wrote);
    # without a watcher (set_wakeup_fd unavailable) the count happens here
    if not _watching:
        _received(signum)
    else:
        request_stop()


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if _depth > 0 and signum in SIGNALS:
                _received(signum)


def _start_watcher() -> int:
    """A daemon thread reading signal numbers from a pipe; the write end for set_wakeup_fd."""
    global _watcher_fd
    if _watcher_fd is None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd needs it: a full pipe must not block the handler
        threading.Thread(target=_watch, args=(read_fd,), name="bench-signal-watcher", daemon=True).start()
        _watcher_fd = write_fd
    return _watcher_fd


@contextlib.contextmanager
def handling_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGUSR2 into a stop request while inside (main thread only; elsewhere,
    and where a signal cannot be caught, signals keep their behaviour). The outermost context
    clears any earlier request on entry and restores the previous handlers on exit."""
    global _depth, _old_wakeup_fd, _watching
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _depth == 0
    if outermost:
        clear()
        try:
            _old_wakeup_fd = signal.set_wakeup_fd(_start_watcher(), warn_on_full_buffer=False)
            _watching = True
        except (ValueError, OSError):
            _old_wakeup_fd, _watching = None, False
        for sig in SIGNALS:
            try:
                _old_handlers[sig] = signal.signal(sig, _handler)
            except (ValueError, OSError):
                pass
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if outermost:
            for sig, old in _old_handlers.items():
                signal.signal(sig, old)
            _old_handlers.clear()
            if _watching:
                signal.set_wakeup_fd(_old_wakeup_fd)
                _watching = False


@contextlib.contextmanager
def at_hard_exit(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` (best effort) just before a second signal ends the process: a driver passes the
    second signal on to its workers, so that they too exit at once."""
    _before_exit.append(callback)
    try:
        yield
    finally:
        _before_exit.remove(callback)
