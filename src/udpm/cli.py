"""The ``udpm`` command line: parse, then call one library function per command.

Each command lives in ``udpm.commands.<name>`` and exposes ``register(subparsers)``.
Bad input ends with a one-line message and exit status 1; set ``UDPM_DEBUG=1`` to see the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["train", "sample", "info", "demo", "eval", "bench", "latent", "features"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="udpm",
        description="Fast diffusion models: train, sample, explore and measure UDPM and the "
        "baselines it is compared with. Run 'udpm COMMAND --help' for each command.",
    )
    from udpm import __version__

    parser.add_argument("--version", action="version", version=f"udpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"udpm.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"udpm.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from udpm.errors import UDPMError

    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("udpm: interrupted; completed checkpoints are kept", file=sys.stderr)
        return 130
    except (UDPMError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        if os.environ.get("UDPM_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"udpm {args.command}: error: {message}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("UDPM_DEBUG"):
            raise
        first = (str(exc).splitlines() or [""])[0]
        print(
            f"udpm {args.command}: internal error: {type(exc).__name__}: {first} "
            "(rerun with UDPM_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
