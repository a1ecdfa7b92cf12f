"""snapd: pytest that starts instantly.

A daemon keeps copy-on-write snapshot processes that already imported the project and set up its
session fixtures; ``snapd pytest ARGS`` forks a child from the deepest snapshot still valid after
your edits and runs the real pytest there, on your terminal.

The public API is one decorator, ``snapd.after_fork`` (see ``snapd.forks``).

PYTEST_DONT_REWRITE: snapd is a pytest plugin's distribution, already imported wherever it
serves a run, and has no assertions worth rewriting.
"""

from __future__ import annotations

# Not `typing.TYPE_CHECKING`: every `snapd pytest` imports this package, and typing costs
# milliseconds to import. Type checkers take any name TYPE_CHECKING for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["after_fork"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazily: the client imports this package on every run, and needs none of it.
    if name == "after_fork":
        from snapd.forks import after_fork

        return after_fork
    raise AttributeError(f"module 'snapd' has no attribute {name!r}")
