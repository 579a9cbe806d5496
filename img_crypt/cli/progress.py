"""A progress bar on stderr when stderr is a terminal (tqdm), and nothing otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress(total: int | None, label: str) -> Iterator[Callable[[int], None] | None]:
    """Yield an ``update(n)`` callback drawing a bar, or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # only interactive runs pay for the import

    with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
              file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

        def update(n: int) -> None:
            bar.update(n)

        yield update
