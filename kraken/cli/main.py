"""The ``kraken`` command: one sub-command per area (certs, pubsub, blob, state, pipeline)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kraken.cli.examples import ExampleParser

# Sub-command modules; each has ``add_parser(subparsers)`` that sets ``func(args) -> int``.
COMMANDS = (
    "certs", "pubsub", "blob", "registry", "state", "pipeline", "cluster", "doctor", "queues", "containerd",
)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = ExampleParser(
        prog="kraken", description="kraken servers: tools for operators"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=ExampleParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"kraken.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"kraken.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
