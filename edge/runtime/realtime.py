"""Real-time scheduling for the threads that carry the latency budget.

Under the default scheduler a window's last frame can wait for whatever else the
gateway runs (a log rotation, a package update, a kernel worker) before the reader
is woken, and the decider can be preempted halfway through an inference.  With
``SCHED_FIFO`` the reader and the decider run as soon as they are runnable and are
never preempted by ordinary processes.  Both threads block between windows, so they
cannot starve the system; the kernel's real-time throttle (95 % of each second by
default) is a second guard.

Only the threads that call :func:`enter_realtime` are raised: the status page, the
log checkpointer and the main thread stay ordinary and yield the core to them (the
interpreter lock is still shared, so their Python code can still delay a decision by
up to the interpreter's switch interval).  Raising a priority needs root, ``CAP_SYS_NICE`` or a
``LimitRTPRIO=`` (``RLIMIT_RTPRIO``) at least as high; the installed systemd unit
runs as root.
"""

from __future__ import annotations

import os

#: Priority the installed service asks for: above ordinary and most kernel threads
#: (threaded interrupts run at 50), below watchdogs and migration threads (99).
DEFAULT_SERVICE_PRIORITY = 40


def max_priority() -> int:
    """Highest SCHED_FIFO priority on this system (99 on Linux); 0 where there is none."""
    if not hasattr(os, "SCHED_FIFO"):
        return 0
    return os.sched_get_priority_max(os.SCHED_FIFO)


def check_priority(priority: int) -> int:
    """``priority`` if this system has SCHED_FIFO and the value is in its range, else ValueError."""
    top = max_priority()
    if not top:
        raise ValueError("real-time scheduling (SCHED_FIFO) is not available on this system")
    if not 1 <= priority <= top:
        raise ValueError(f"a real-time priority is between 1 and {top}, got {priority}")
    return priority


def enter_realtime(priority: int) -> str | None:
    """Run the calling thread under SCHED_FIFO at ``priority``; returns why not, or None when it did.

    A refusal is returned, not raised: a gateway that cannot raise its priority still
    decides every window (the runtime says so on stderr and on its status page).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(check_priority(priority)))
    except ValueError as exc:
        return str(exc)
    except PermissionError:
        return (f"not permitted to use real-time priority {priority}: run as root, grant CAP_SYS_NICE, or set "
                f"LimitRTPRIO={priority} in the service")
    except OSError as exc:  # e.g. a container's seccomp profile
        return f"real-time priority {priority} refused by the system: {exc}"
    return None


def current_priority() -> int:
    """The calling thread's SCHED_FIFO priority, 0 when it runs under the ordinary scheduler."""
    if not hasattr(os, "SCHED_FIFO") or os.sched_getscheduler(0) != os.SCHED_FIFO:
        return 0
    return os.sched_getparam(0).sched_priority
