"""Progress on stderr for long work (tqdm), off when quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Protocol


class Progress(Protocol):
    """What the audit reports to: the stage it is in (a big graph takes seconds to walk before a
    byte is read), the bytes it will read, then the bytes read so far."""

    def stage(self, text: str) -> None: ...

    def start(self, total_bytes: int) -> None: ...

    def __call__(self, done_bytes: int) -> None: ...


class _TqdmProgress:
    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None
        self.status = False  # a stage line is showing

    def stage(self, text: str) -> None:
        self.close()
        sys.stderr.write(f"\r{text}...\x1b[K")  # one line, overwritten by the next stage or bar
        sys.stderr.flush()
        self.status = True

    def start(self, total_bytes: int) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(
            total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=self.desc, file=sys.stderr, leave=False
        )

    def __call__(self, done_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(done_bytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.status:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.status = False


@contextmanager
def progress_bar(enabled: bool = True, desc: str = "reading tensors") -> Iterator[Progress | None]:
    """A progress sink drawing a bar on stderr, or None when no bar should be shown."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    sink = _TqdmProgress(desc)
    try:
        yield sink
    finally:
        sink.close()
