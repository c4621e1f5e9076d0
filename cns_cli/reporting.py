"""Progress reporting for long use cases. The use case calls a Reporter; the CLI picks the rich one
(progress bar with loss and ETA on stderr), tests and --json runs a quiet one."""

from __future__ import annotations

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
