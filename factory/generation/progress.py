"""A rich progress bar for generation: done/total, requests/s, tokens/s and spend."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from factory.generation.llm.engine import EngineStats


class _RatesColumn(ProgressColumn):
    def __init__(self, stats: EngineStats):
        super().__init__()
        self.stats = stats

    def render(self, task: Task) -> Text:
        s = self.stats
        return Text(f"{s.done / s.elapsed:5.1f} req/s  {s.tokens / s.elapsed:7.0f} tok/s  ${s.usd:.4f}"
                    f"  cached {s.cached}  retries {s.retries}", style="cyan")


class EngineProgress:
    """Context manager; ``advance(n)`` after each batch of samples. Silent when ``enabled`` is False."""

    def __init__(self, stats: EngineStats, total: int, enabled: bool = True, description: str = "generating"):
        self.enabled = enabled
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 _RatesColumn(stats), TimeElapsedColumn(), disable=not enabled)
        self.task = self.progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def __enter__(self) -> EngineProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
