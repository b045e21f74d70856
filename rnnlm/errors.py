"""User-facing errors and the entry-point wrapper that reports them without a traceback."""

from __future__ import annotations

import difflib
import functools
import os
import signal
import sys
from collections.abc import Callable


class RnnlmError(Exception):
    """A problem the user can fix (bad params, bad input file, no source reachable).

    Stage scripts turn it into one line on stderr and exit status 1.
    """


class ParamError(RnnlmError):
    """An invalid value in params.yaml; the message names the param."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"params.yaml: {key}: {problem}")


def did_you_mean(word, choices, template: str = " (did you mean {!r}?)") -> str:
    """``template`` filled with the nearest of ``choices`` to ``word`` (difflib), or "" if none is near."""
    hint = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return template.format(hint[0]) if hint else ""


def stage_main(fn: Callable[[], object]) -> Callable[[], None]:
    """Decorate a stage's ``main``: user errors print one clear line and exit 1.

    Anything else is a bug and keeps its traceback. Ctrl-C exits with 130 without a
    traceback, after whatever cleanup the stage did on the way out.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> None:
        # SIGTERM (e.g. from a scheduler or `kill`) unwinds like Ctrl-C, so temp files are removed.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            fn(*args, **kwargs)
        except RnnlmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except BrokenPipeError:
            # the reader went away (`rnnlm sample ... | head`): a normal end for a command-line tool.
            # stdout now points at /dev/null, so the interpreter's last flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        finally:
            # The work is over: a late SIGTERM (torchrun stopping the ranks of a failed run) must
            # not raise KeyboardInterrupt inside the interpreter's teardown and print a traceback.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
