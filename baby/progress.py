"""Progress lines with an ETA for long silent phases (BPE training, BLiMP scoring): about every 10 %
of the work, and only once the phase has run for a while, so short phases stay quiet."""
from __future__ import annotations

import time
from typing import Callable

Log = Callable[[str], None]


def say(line: str) -> None:
    """Default log: print and flush, so progress shows through pipes and in notebooks."""
    print(line, flush=True)


def quiet(_line: str) -> None:
    """The log of ranks other than 0: rank 0 alone prints."""


class ProgressLog:
    """Call with (done, total); logs '  <what> x/y (p %), ETA s' about every 1/steps of the work."""

    def __init__(self, log: Callable[[str], None], what: str = "scored windows", steps: int = 10,
                 quiet_seconds: float = 2.0) -> None:
        self.log, self.what, self.steps, self.quiet = log, what, steps, quiet_seconds
        self.said, self.start = 0, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        part = done * self.steps // max(total, 1)
        if part > self.said and done < total:
            self.said = part
            elapsed = time.perf_counter() - self.start
            if elapsed >= self.quiet:
                eta = elapsed / done * (total - done)
                self.log(f"  {self.what} {done:,}/{total:,} ({100 * done / total:.0f} %), ETA {eta:,.0f} s")
