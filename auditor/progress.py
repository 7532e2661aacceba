"""Progress on stderr for long work (tqdm), off when quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bar(enabled: bool = True, total: int | None = None, desc: str = "reading tensors") -> Iterator[Callable[[int], None] | None]:
    """Yield a callback taking processed byte counts, or None when no bar is shown."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr, leave=False) as bar:
        yield bar.update
