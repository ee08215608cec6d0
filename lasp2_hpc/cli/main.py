"""The ``lasp2`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lasp2_hpc.cli import campaign_commands, hdnnp_commands, oracle_commands
from lasp2_hpc.cli.errors import run_handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lasp2", description="On-the-fly training of committees of neural network potentials."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    campaign_commands.register(commands)
    hdnnp_commands.register(commands)
    oracle_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # the root handler prints what the level asks for, also when a command logs lasp2's info
    # lines to a file of its own (`lasp2 run`: logs/lasp2.log)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if arguments.verbose else logging.WARNING)
    # every error of every command ends as lasp2_hpc/cli/errors.py's table says: an exit code
    # and one line, never a traceback (`-v` adds it)
    return run_handler(lambda: arguments.handler(arguments), verbose=arguments.verbose)


if __name__ == "__main__":
    sys.exit(main())
