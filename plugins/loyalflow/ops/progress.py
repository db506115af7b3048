"""A rich progress bar for long CLI runs: audience chunks done, messages decided per second, sent so far.

:func:`chunk_bar` yields the callback :func:`loyalflow.pipeline.run` calls after each chunk. On a terminal
the bar updates live and disappears at the end; everywhere (logs, CI) one line then sums the run up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


@dataclass
class ChunkRate:
    """Chunks done and messages decided and sent, with the rate since the start."""

    started: float = field(default_factory=time.monotonic)
    chunks: int = 0
    total: int = 0
    messages: int = 0
    sent: int = 0
    listener: Callable[[ChunkRate], None] | None = None  # told after each chunk (the live bar)

    def add(self, done: int, total: int, counts: dict[str, int]) -> None:
        """Count one finished chunk and its messages by reason (the pipeline's ``progress`` callback)."""
        self.chunks, self.total = done, total
        self.messages += sum(counts.values())
        self.sent += counts.get("sent", 0) + counts.get("dry_run", 0)
        if self.listener is not None:
            self.listener(self)

    @property
    def per_second(self) -> float:
        """Messages decided per second so far."""
        return self.messages / max(time.monotonic() - self.started, 1e-9)

    def line(self, label: str, dry_run: bool = False) -> str:
        """One line for the end of a run: chunks, messages, the rate and how many went (or would go)."""
        seconds = time.monotonic() - self.started
        went = "would send" if dry_run else "sent"
        return (
            f"{label}: {self.chunks}/{self.total} chunk(s), {self.messages:,} message(s) decided in "
            f"{seconds:.1f} s ({self.per_second:,.0f}/s), {went} {self.sent:,}"
        )


@contextmanager
def chunk_bar(console: Console, label: str, dry_run: bool = False) -> Iterator[ChunkRate]:
    """A live bar while the body runs; pass ``rate.add`` as the pipeline's ``progress`` callback."""
    rate = ChunkRate()
    went = "would send" if dry_run else "sent"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks · {task.fields[rate]:,.0f} msg/s · " + went + " {task.fields[sent]:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task: TaskID = bar.add_task(label, total=None, rate=0.0, sent=0)
        rate.listener = lambda r: bar.update(
            task, completed=r.chunks, total=r.total, rate=r.per_second, sent=r.sent
        )
        yield rate
    if rate.total:
        console.print(rate.line(label, dry_run), highlight=False)
