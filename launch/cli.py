"""The one entry point of every binary in launch/: `cli.run(main, define_flags)`.

An expected failure (r1jax.errors.EXPECTED: bad input, config or files; a bad flag; a
config file that does not load) ends the program with one `error: ...` line on stderr and exit
status 1; `--verbose` shows the full traceback instead. Anything else (a bug) keeps its traceback.
"""
from __future__ import annotations

import functools
import re
import sys
from typing import Callable, Optional

from absl import app, flags

from r1jax import errors

VERBOSE_FLAG = "verbose"
# Long enough for a path and the allowed values; short enough that a page of spec JSON some
# libraries put in their messages does not bury the line.
MAX_LINE = 600


def one_line(text: str) -> str:
    """A message as one line: its whitespace collapsed, cut at MAX_LINE characters."""
    line = re.sub(r"\s+", " ", text).strip()
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE] + f" ... (--{VERBOSE_FLAG} for all of it)"
    return line


def error_line(error: BaseException) -> str:
    """`error: <message>` for an exception; a KeyError's message without repr's quotes."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        message = error.args[0]
    else:
        message = str(error) or type(error).__name__
    return "error: " + one_line(message)


def flag_error_line(error: flags.Error) -> str:
    """A flag parsing error, in which ml_collections embeds the traceback of a config file that
    did not load: the text before it and the exception it ends with."""
    lines = str(error).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("Traceback")), None)
    if start is not None:
        last = next(line for line in reversed(lines) if line.strip())
        lines = lines[:start] + [last]
    return "error: " + one_line("\n".join(lines))


def _verbose(argv: list[str]) -> bool:
    if flags.FLAGS.is_parsed():
        return flags.FLAGS[VERBOSE_FLAG].value
    # Before parsing (or when it failed), from the command line as written.
    return any(arg == f"--{VERBOSE_FLAG}" or arg.lower() in (f"--{VERBOSE_FLAG}=true",
                                                              f"--{VERBOSE_FLAG}=1")
               for arg in argv)


def _fail(line: str):
    print(line, file=sys.stderr, flush=True)
    # SystemExit, not os._exit: background writers (orbax) still finish before the interpreter
    # stops (see r1jax.checkpoint._close_at_exit).
    sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
    if _verbose(argv):
        return app.parse_flags_with_usage(argv)  # absl's own report, traceback and all.
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(flag_error_line(e))
    except (*errors.EXPECTED, AttributeError) as e:  # ml_collections': an unknown --config.KEY.
        _fail(f"error: in the flags, {type(e).__name__}: " + one_line(str(e)))


def _main_or_error_line(main: Callable, argv: list[str]):
    try:
        return main(argv)
    except (*errors.EXPECTED, app.UsageError) as e:
        if _verbose(argv):
            raise
        _fail(error_line(e))


def run(main: Callable[[list[str]], Optional[int]], define_flags: Optional[Callable] = None):
    """Defines the binary's flags (only now that it runs) and --verbose, then runs `main` under
    absl with expected failures reported as one line."""
    if define_flags is not None:
        define_flags()
    flags.DEFINE_bool(VERBOSE_FLAG, False, "On an error, print its full traceback, not only "
                      "the one-line message.")
    app.run(functools.partial(_main_or_error_line, main), flags_parser=_parse_flags)
