"""``snapd``: the command line. ``snapd pytest`` goes straight to the client, before click or
anything else heavy is imported; every other verb is in ``snapd.commands``."""

from __future__ import annotations

import sys


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "pytest":
        from snapd import client

        client.main(sys.argv[2:])
    from snapd.commands import cli

    cli()
    return 0
