"""Progress reporting for long use cases. The use case calls a Reporter; the CLI picks one with
`for_stderr()`: a rich progress bar when stderr is a terminal, plain lines at a modest rate when it is not
(a log file, CI, `2>&1 | tee`), so a long run always shows that it is alive. Library callers and tests get
the quiet NullReporter by default."""

from __future__ import annotations

import sys
import time

from . import output


class Reporter:
    def phase(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def start(self, total: int) -> None: ...
    def step(self, done: int, loss: float) -> None: ...
    def stop(self) -> None: ...


class NullReporter(Reporter):
    """Says nothing except warnings (which always reach stderr)."""

    def warn(self, message: str) -> None:
        output.warn(message)


class PlainReporter(NullReporter):
    """Phases and progress as plain lines on stderr: one line per tenth of the steps, and at least one every
    `every_s` seconds while steps keep coming, so a log shows progress without a line per step."""

    def __init__(self, every_s: float = 60.0, clock=time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.total, self.next_tenth, self.last_line = 0, 0, 0.0

    def phase(self, message: str) -> None:
        output.info(f"… {message}")

    def start(self, total: int) -> None:
        self.total, self.next_tenth, self.last_line = total, 1, self.clock()

    def step(self, done: int, loss: float) -> None:
        now = self.clock()
        tenth_reached = done * 10 >= self.next_tenth * self.total
        if tenth_reached or done == self.total or now - self.last_line >= self.every_s:
            output.info(f"training {done}/{self.total} loss {loss:.4f}")
            self.last_line = now
            while self.next_tenth <= 10 and done * 10 >= self.next_tenth * self.total:
                self.next_tenth += 1


class RichReporter(Reporter):
    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def phase(self, message: str) -> None:
        output.info(f"[dim]…[/dim] {message}")

    def warn(self, message: str) -> None:
        output.warn(message)

    def start(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=output.err_console(), transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, loss="-")

    def step(self, done: int, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, loss=f"{loss:.4f}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def for_stderr() -> Reporter:
    """What the CLI reports through: the live bar on a terminal, plain lines otherwise (also with --json,
    whose document goes to stdout)."""
    return RichReporter() if sys.stderr.isatty() else PlainReporter()


class SamplingProgress:
    """Progress of `cns generate`: which image(s) the current pipeline call draws and its denoising step.
    The quiet default (library callers, tests)."""

    def start(self, images: int, steps: int) -> None: ...
    def call(self, first: int, count: int) -> None: ...  # images first+1 .. first+count (1-based) are drawn now
    def step(self, done: int, total: int) -> None: ...  # `done` of `total` denoising steps of the current call
    def stop(self) -> None: ...

    @staticmethod
    def label(first: int, count: int, images: int) -> str:
        return f"image {first + 1}/{images}" if count == 1 else f"images {first + 1}-{first + count}/{images}"


class PlainSamplingProgress(SamplingProgress):
    """Off a terminal: a plain line only for long runs, at most one every `every_s` seconds, so a short run
    prints nothing and a log still shows that a long one is alive."""

    def __init__(self, every_s: float = 30.0, clock=time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.images = self.steps = self.first = self.count = 0
        self.last_line = 0.0

    def start(self, images: int, steps: int) -> None:
        self.images, self.steps, self.last_line = images, steps, self.clock()

    def call(self, first: int, count: int) -> None:
        self.first, self.count = first, count

    def step(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last_line >= self.every_s:
            output.info(f"generating {self.label(self.first, self.count, self.images)}, step {done}/{total}")
            self.last_line = now


class RichSamplingProgress(SamplingProgress):
    """On a terminal: one live bar, reset for every pipeline call, labelled with the image(s) it draws."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None
        self.images = self.steps = 0

    def start(self, images: int, steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.images, self.steps = images, steps
        # No stdout redirection: the image paths on stdout must stay on stdout (a pipe) whatever stderr is.
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=output.err_console(),
                                  transient=True, redirect_stdout=False, redirect_stderr=False)
        self._progress.start()
        self._task = self._progress.add_task(self.label(0, 1, images), total=steps)

    def call(self, first: int, count: int) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=self.steps, description=self.label(first, count, self.images))

    def step(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def sampling_progress_for_stderr() -> SamplingProgress:
    """The live bar on a terminal, occasional plain lines otherwise."""
    return RichSamplingProgress() if sys.stderr.isatty() else PlainSamplingProgress()
