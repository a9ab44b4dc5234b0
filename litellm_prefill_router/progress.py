"""Progress bars for long runtime commands (collect, judge): tqdm where asked for, a no-op otherwise."""

from __future__ import annotations

from typing import Any


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    """A tqdm bar of ``total`` ``unit``s (or one that shows nothing when ``enabled`` is False)."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)
