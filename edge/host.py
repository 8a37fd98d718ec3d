"""Which machine this is, for the records that runs, calibrations and benchmarks keep of where
their figures were measured (no torch: the gateway side and the benchmarks use it too)."""

from __future__ import annotations

import platform


def processor_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says, else "unknown".

    ``platform.processor()`` says only "x86_64" on Linux, which cannot tell two machines apart.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
