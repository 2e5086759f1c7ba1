"""What every `python -m avfast.<program>` shares: the heap setting, the one-line error and the exit codes.

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        return guarded(PROG, lambda: run(args))

    if __name__ == "__main__":
        program(main)

Exit codes: 0 done, 2 a problem with the request or the environment (printed as one line
`<prog>: error: <message>`, as argparse does for bad arguments), 130 interrupted. Programs check their
optional packages before they start working (`avfast._deps.check_installed`).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from ._deps import MissingDependency

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


# What a program reports as one line: the request or the environment is wrong (not a bug in avfast).
USER_ERRORS: tuple[type[BaseException], ...] = (CliError, MissingDependency, ValueError, TypeError, FileNotFoundError,
                                                 NotADirectoryError, IsADirectoryError, PermissionError)


def error_line(prog: str, message: object) -> None:
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"{prog}: error: {text}", file=sys.stderr)


def guarded(prog: str, work: Callable[[], int | None], errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """Runs `work`; `errors` become one line on stderr and exit status 2, Ctrl-C exit status 130."""
    try:
        rc = work()
    except errors as exc:
        error_line(prog, exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if rc is None else int(rc)


def program(main: Callable[[], int]) -> NoReturn:
    """Runs a program's `main()` as the process: large allocations stay on the heap (avfast/heap.py; a
    program's setting, never the library's), and its return value is the exit status."""
    from .heap import keep_large_allocations_on_the_heap

    keep_large_allocations_on_the_heap()
    sys.exit(main())
