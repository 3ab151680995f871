"""Progress of an epoch where people look for it: a tqdm bar on a terminal, and in a job log
(stderr redirected to a file, as under SLURM) one line every ``log_every`` seconds with the epoch,
step/steps, images/s and the epoch's ETA — a bar's carriage returns make unreadable job logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import structlog
from tqdm import tqdm

log = structlog.get_logger("autogrow")


def format_seconds(seconds: float) -> str:
    """``3725`` → ``1h02m05s``; ``65`` → ``1m05s``; ``7`` → ``7s``."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class EpochProgress:
    """Reports steps ``initial..total`` of one epoch; ``update(step)`` after each step."""

    def __init__(self, desc: str, *, total: int, initial: int = 0,
                 images_per_step: int, log_every: float = 60.0, enabled: bool = True,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        stream = sys.stderr if stream is None else stream
        self.desc, self.total, self.initial = desc, total, initial
        self.images_per_step = images_per_step
        self.log_every = log_every
        self.enabled = enabled
        self._clock = clock
        self._started = self._last = clock()
        tty = enabled and stream.isatty()
        self._bar = (tqdm(total=total, initial=initial, desc=desc, leave=False, unit="batch",
                          dynamic_ncols=True, file=stream) if tty else None)

    def update(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            return
        if not self.enabled:
            return
        now = self._clock()
        if now - self._last >= self.log_every:
            self._last = now
            log.info(self.line(step, now))

    def line(self, step: int, now: float) -> str:
        """One progress line at ``step``: where, how fast, how long until the epoch ends."""
        done, elapsed = step - self.initial, max(now - self._started, 1e-9)
        rate = done / elapsed
        eta = format_seconds((self.total - step) / rate) if rate > 0 else "?"
        return (f"{self.desc} step {step}/{self.total}  "
                f"{done * self.images_per_step / elapsed:,.0f} images/s  ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
