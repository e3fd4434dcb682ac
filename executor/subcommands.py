"""``gg`` subcommands of the layers above the IR (force, trace, infer, lambda ...).

Each entry is a function ``add(subparsers)``; keep heavy imports inside handlers.
"""

from model_sub import infer, server_cli

from . import force_cli, lambda_package, trace_summary
from .lambda_local import cli as lambda_local_cli

SUBCOMMANDS: tuple = (force_cli.add, trace_summary.add, infer.add, server_cli.add, lambda_local_cli.add,
                      lambda_package.add)
