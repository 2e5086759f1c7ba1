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

import argparse
import contextlib
import errno
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from ._deps import MissingDependency, RuntimeUnavailable

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


# What a program reports as one line: the request or the environment is wrong (not a bug in avfast).
USER_ERRORS: tuple[type[BaseException], ...] = (CliError, MissingDependency, RuntimeUnavailable, ValueError, TypeError,
                                                 FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                 PermissionError)


def error_line(prog: str, message: object) -> None:
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"{prog}: error: {text}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse whose refusals (an unknown option, a bad choice or number) are one line like every other
    error of a program, `<prog>: error: <message> (see --help)`, exit status 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        error_line(self.prog, f"{message} (see --help)")
        self.exit(EXIT_ERROR)


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


def check_out_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """An output folder that exists or can be made: refuses a file and a place nothing can be written
    (checked with a real probe in the nearest existing folder: os.access says yes to root even where
    nothing can be made, as in /proc or on read-only mounts). Makes nothing."""
    import tempfile

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CliError(f"{flag}: {str(out)!r} is a file; give a folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise CliError(f"{flag}: {str(out)!r} cannot be made: {str(parent)!r} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".avfast-write-probe-", dir=parent))
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno == errno.ENOENT:  # `parent` exists (found above): its file system makes no new entries (/proc)
            why = f"its file system accepts no new files or folders ({why})"
        raise CliError(f"{flag}: {str(out)!r} cannot be written: making a folder in {str(parent)!r} failed: "
                       f"{why}") from None
    return out


def check_device(name: str, flag: str = "--device"):
    """`name` as a torch.device this machine has: a malformed name, a device type this torch was not
    built for and a CUDA index it does not have are one line each."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CliError(f"{flag}: {name!r} is not a device name; use cpu or cuda (cuda:N for one GPU)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            cpu = f"{flag} cpu" if flag.startswith("--") else f"{flag.strip('`')}='cpu'"   # a flag or an argument
            raise CliError(f"{flag} {name}: torch sees no CUDA device here (torch {torch.__version__}, CUDA build: "
                           f"{torch.version.cuda or 'no'}); use {cpu}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CliError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise CliError(f"{flag} {name}: avfast runs on cpu or cuda, not {device.type}")
    return device


def check_finite(value: float, flag: str, *, minimum: float | None = None, positive: bool = False) -> float:
    """A float option that is a finite number (and >= minimum, or > 0 with positive)."""
    if not math.isfinite(value):
        raise CliError(f"{flag} must be a finite number, got {value}")
    if positive and value <= 0:
        raise CliError(f"{flag} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise CliError(f"{flag} must be >= {minimum:g}, got {value}")
    return value


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Warnings inside the block are printed as `<prog>: warning: <message>`, one line each like the
    program's errors: Python's default form adds the library's file, line number and source line, which
    a user of the command line cannot act on. The program's own setting, restored on leaving."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split()) or category.__name__
        print(f"{prog}: warning: {text}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# --threads of the programs that sample (train and the experiments: "torch threads (0: torch's default)").
THREADS_HELP = ("torch threads (0: torch's default, one per core). On a machine other jobs keep busy, 1 thread can "
                "be many times faster than the default")


def use_threads(threads: int, flag: str = "--threads") -> int:
    """--threads: refuses a negative count, else sets torch's intra-op threads (0 leaves torch's default).
    On a busy machine torch's default (one thread per core) waits on the cores other jobs hold: 1 thread
    can then be many times faster."""
    if threads < 0:
        raise CliError(f"{flag} must be >= 0 (0: torch's default), got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    return threads


def reader_may_close_stdout(main: Callable[[], int | None]) -> int:
    """`main()`'s exit status, where whoever reads stdout may stop reading early (`| head`): the rest of
    the output then goes nowhere and the status is 0, not a BrokenPipeError traceback (the reader took
    what it wanted)."""
    try:
        status = main()
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" in the interpreter's exit
    except BrokenPipeError:
        try:  # the interpreter flushes stdout again on its way out: let that write to nothing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file descriptor (a test's capture): nothing to flush
            pass
        return EXIT_OK
    return EXIT_OK if status is None else int(status)


def program(main: Callable[[], int]) -> NoReturn:
    """Runs a program's `main()` as the process: large allocations stay on the heap (avfast/heap.py; a
    program's setting, never the library's), its return value is the exit status, and a reader closing
    stdout early (`| head`) ends it quietly (reader_may_close_stdout)."""
    from .heap import keep_large_allocations_on_the_heap

    keep_large_allocations_on_the_heap()
    sys.exit(reader_may_close_stdout(main))
