"""How much memory a stretch of this process's life took at its peak, above what it held at
the start (the ``perf/peak_mem_mb`` cost).

The kernel keeps one high-water mark of resident memory per process. Read as is, a peak from
before the stretch (a model load, the reference log-probs computed before training) hides
the stretch's own: the mark never goes down. On Linux the mark can be reset to the current
resident size (``/proc/self/clear_refs``, value 5), so :class:`MemoryMark` resets it when it
starts and reads ``VmHWM`` at the end. Elsewhere it falls back to the difference of the
process's lifetime peaks (``ru_maxrss``), which is 0 when the stretch stayed below an earlier
peak. Written by hand: psutil reads these figures but cannot reset the mark.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK_RSS = "5"


def _status_mb(field: str) -> float | None:
    """A ``kB`` figure of /proc/self/status in MiB (None where there is no such file)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def lifetime_peak_rss_mb() -> float:
    """The process's peak resident memory since it started, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # KiB on Linux, bytes on macOS.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark to the current resident size; False where the
    platform (or a locked-down /proc) does not allow it."""
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK_RSS)
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


class MemoryMark:
    """Started at the beginning of a stretch; :meth:`peak_above_mb` at its end."""

    def __init__(self):
        self.resettable = reset_peak_rss()
        if self.resettable:
            self.start_mb = _status_mb("VmRSS") or 0.0
        else:
            self.start_mb = lifetime_peak_rss_mb()

    def peak_above_mb(self) -> float:
        """The stretch's peak resident memory above what the process held when it started."""
        peak = _status_mb("VmHWM") if self.resettable else None
        return max(0.0, (peak if peak is not None else lifetime_peak_rss_mb()) - self.start_mb)
