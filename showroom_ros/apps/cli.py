"""The ``showroom`` command: offline reconstruction, the web viewer, bag export, generation, distillation.

``showroom reconstruct PATH`` runs the node's pipeline on a folder of photos, a frames_c2w.txt folder
or a rosbag2; ``showroom view PATH`` serves the result in a browser (viser); ``showroom export-bag``
writes what the node would publish to an MCAP bag for ``ros2 bag play`` and Foxglove. None of them
needs ROS. ``generate`` and ``distill`` forward to their own modules.

Every failure ends with a one-line ``showroom <command>: error: ...`` on stderr and a non-zero exit
status; ``--debug`` (or ``SHOWROOM_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from showroom_ros.apps import cli_export_bag, cli_reconstruct, cli_view
from showroom_ros.apps.cli_common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from showroom_ros.io.console import stdout_for_results

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "FORWARDED", "CliError", "build_parser", "main"]


# --- forwarded subcommands -----------------------------------------------------------------------

FORWARDED = {
    "generate": (("showroom_ros.generation.cli", "main"), ("showroom_ros.generation", "main")),
    "distill": (("showroom_ros.distillation.cli", "main"),),
}


def _forward(command: str, argv: list[str]) -> int:
    """Run another module's ``main(argv)``; a missing module is a clear error, not an ImportError."""
    problems = []
    for module_name, function in FORWARDED[command]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            problems.append(f"{module_name}: {error}")
            continue
        entry = getattr(module, function, None)
        if callable(entry):
            try:
                result = entry(argv)
            except SystemExit as exit_request:  # their argparse (--help, usage errors)
                code = exit_request.code
                return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
            return int(result or 0)
        problems.append(f"{module_name} has no {function}()")
    extra = {"generate": "generation", "distill": "distill"}[command]
    raise CliError(
        f"`showroom {command}` is not available in this install ({'; '.join(problems)}); "
        f"install the extras with pip install 'showroom_ros[{extra}]'"
    )


# --- parser and main -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="showroom",
        description="Reconstruct rooms from 3-5 photos offline, view them in a browser, export them as ROS bags.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    cli_reconstruct.add_parser(commands)
    cli_view.add_parser(commands)
    cli_export_bag.add_parser(commands)

    for command, text in (
        ("generate", "generate novel views (forwards to showroom_ros.generation)"),
        ("distill", "distil a student model (forwards to showroom_ros.distillation)"),
    ):
        commands.add_parser(command, help=text, add_help=False)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``showroom`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments or os.environ.get("SHOWROOM_DEBUG", "") not in ("", "0")
    arguments = [a for a in arguments if a != "--debug"]
    command = next((a for a in arguments if not a.startswith("-")), "")
    try:
        if command in FORWARDED:
            position = arguments.index(command)
            return _forward(command, arguments[position + 1 :])
        parser = build_parser()
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exit_request:  # --help, or a usage error argparse already explained
            return int(exit_request.code or 0) if isinstance(exit_request.code, int) else EXIT_USAGE
        with stdout_for_results():  # after parsing: --help is the result of a --help
            return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"showroom {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            raise
        print(f"showroom {command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
