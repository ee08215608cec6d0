"""The ``lasp2`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lasp2_hpc.cli import campaign_commands, hdnnp_commands, oracle_commands


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
    try:
        return int(arguments.handler(arguments) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"lasp2: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lasp2 status DIR | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
