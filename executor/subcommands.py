"""``gg`` subcommands of the layers above the IR (force, trace, infer, lambda ...).

Each entry is a function ``add(subparsers)``; keep heavy imports inside handlers.
"""

from . import force_cli

SUBCOMMANDS: tuple = (force_cli.add,)
