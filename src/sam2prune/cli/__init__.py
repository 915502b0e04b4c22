"""The ``sam2prune`` console script: one subcommand per job (``COMMANDS``), each a module with a
plain typed function that does the work, the options of its parser, and a handler that turns
the parsed options into the function's arguments."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
from typing import Any, NoReturn

from sam2prune.cli import bench, fit_aligner, models, prompt, report, score, segment, sweep, train_router
from sam2prune.cli import eval as evaluate
from sam2prune.cli.common import Command, cpu_threads, embedded_clip, examples, log
from sam2prune.errors import SIGTERM_RECEIVED, SequencesFailed, UserError, WorkerFailed

__all__ = ["COMMANDS", "Command", "build_parser", "embedded_clip", "main"]

COMMANDS: dict[str, Command] = {
    "segment": segment.COMMAND,
    "bench": bench.COMMAND,
    "score": score.COMMAND,
    "eval": evaluate.COMMAND,
    "report": report.COMMAND,
    "sweep": sweep.COMMAND,
    "prompt": prompt.COMMAND,
    "fit-aligner": fit_aligner.COMMAND,
    "train-router": train_router.COMMAND,
    "models": models.COMMAND,
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import sam2prune

    try:
        sam2_version = version("sam2")
    except PackageNotFoundError:
        sam2_version = "not installed"
    return f"sam2prune {sam2prune.__version__} (sam2 {sam2_version})"


class _VersionAction(argparse.Action):
    """``--version``, reading the installed sam2's version only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        print(_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    # no abbreviated options: `bench --method sam2` was taken for --methods, and its message named
    # an option the user never typed
    parser = argparse.ArgumentParser(
        prog="sam2prune",
        allow_abbrev=False,
        description="Token-pruned SAM 2 video object segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "sam2prune segment path/to/frames --point 320,240 --out masks/ --checkpoint sam2.1_hiera_tiny.pt",
            "sam2prune COMMAND --help",
        ),
    )
    parser.add_argument("--version", action=_VersionAction, help="print the versions of sam2prune and sam2, and exit")
    verbose = "also log the resolved settings of the run (debug messages)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    # required, but checked in main: an unknown option before the command is named there
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        # each --help keeps the description's and epilog's line breaks and ends with an example
        subparser = subparsers.add_parser(
            name,
            allow_abbrev=False,
            help=command.help,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=(command.epilog + "\n\n" if command.epilog else "") + examples(*command.examples),
        )
        command.add_arguments(subparser)
        # also after the command's name (not given there: the value before it stands)
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose)
        # the command's own parser names what it does not know, with its usage
        subparser.set_defaults(handler=command.handle, command_parser=subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:  # what the tool does and its commands, rather than "COMMAND is required"
        parser.print_help(sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(_joined_coordinates(argv))
    if args.command is None:
        commands = ", ".join(COMMANDS)
        parser.error(
            (f"unrecognized arguments: {' '.join(unknown)}; " if unknown else "")
            + f"a COMMAND is required (one of {commands})"
        )
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # our messages only: third-party libraries keep their own (quiet) logging defaults
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sam2prune: %(message)s"))
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.debug("%s", " ".join(["sam2prune", *argv]))
    on_main_thread = threading.current_thread() is threading.main_thread()
    SIGTERM_RECEIVED.clear()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        with cpu_threads(getattr(args, "threads", None)):
            return args.handler(args)
    except (Terminated, SystemExit) as error:
        # Ray's driver replaces the SIGTERM handler with one that exits with the signal's number,
        # which Ray turns into SystemExit(1) where it arrives inside a wait (SIGTERM_RECEIVED)
        if isinstance(error, SystemExit) and error.code != signal.SIGTERM and not SIGTERM_RECEIVED.is_set():
            raise
        print("sam2prune: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except UserError as error:
        print(f"sam2prune: error: {error}", file=sys.stderr)
        return 2
    except (SequencesFailed, WorkerFailed) as error:
        print(f"sam2prune: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # the file system refused (a full disk, no permission, a read-only mount) outside the
        # writes that say so (OutputError): one line, naming the file where the error does; what
        # was being written is removed where it was refused
        if error.errno not in _FILE_SYSTEM_REFUSALS:
            raise
        target = f"{error.filename} -> {error.filename2}" if error.filename2 else error.filename
        print(f"sam2prune: error: {f'{target}: ' if target else ''}{error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam2prune: interrupted", file=sys.stderr)
        return 130
    finally:
        if on_main_thread:  # None: the handler was not set from Python; the default is the closest
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# options whose value is pixel coordinates, which may be negative ("-5,1": refused as outside the
# image, with the image's size)
_COORDINATE_OPTIONS = frozenset({"--point", "--neg", "--box"})


def _joined_coordinates(argv: list[str]) -> list[str]:
    """``--point -5,1`` as ``--point=-5,1``: argparse takes a value that starts with "-" and is
    no plain number for an option, and says the option expected an argument."""
    joined: list[str] = []
    values = iter(argv)
    for arg in values:
        if arg in _COORDINATE_OPTIONS:
            value = next(values, None)
            if value is not None and value[:2] in {f"-{d}" for d in "0123456789."}:
                joined.append(f"{arg}={value}")
                continue
            joined += [arg] if value is None else [arg, value]
            continue
        joined.append(arg)
    return joined


_FILE_SYSTEM_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


class Terminated(BaseException):
    """SIGTERM arrived (``kill``, a job scheduler's time limit): raised where the run is, so
    that what it was writing is removed, as on Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM while a command runs (set on the main thread only, where handlers run): stop the
    run where it is; a second SIGTERM is ignored while what was being written is removed."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated
