"""snapd: pytest that starts instantly.

A daemon keeps copy-on-write snapshot processes that already imported the project and set up its
session fixtures; ``snapd pytest ARGS`` forks a child from the deepest snapshot still valid after
your edits and runs the real pytest there, on your terminal.
"""

__version__ = "0.1.0"
