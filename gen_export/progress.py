"""Step timing with an optional rich progress display.

Library functions take a `Steps` and wrap each slow phase in `steps.step(...)`; the CLI passes one
that draws a live rich progress line per step, tests pass the default silent one. Either way the
timings end up in the result object.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Steps:
    """Records how long each named step took; silent unless `show` is set."""

    def __init__(self, show: bool = False, console: Console | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._progress: Progress | None = None
        if show:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console or Console(stderr=True),
                transient=False,
            )

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = None
        if self._progress is not None:
            if not self._progress.live.is_started:
                self._progress.start()
            task = self._progress.add_task(description, total=1)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[description] = self.timings.get(description, 0.0) + elapsed
            if self._progress is not None and task is not None:
                self._progress.update(task, completed=1)

    def close(self) -> None:
        if self._progress is not None and self._progress.live.is_started:
            self._progress.stop()
