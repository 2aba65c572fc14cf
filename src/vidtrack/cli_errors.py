"""How every ``vidtrack`` command ends: one line on stderr and an exit status a script can act on.

=====  =====================================================================================
 0     done
 1     ``batch``: some videos failed (the others are done); any command: an unexpected internal error
 2     bad input or environment (a missing file, a bad option, a full disk): nothing was half-written
 130   interrupted by SIGINT (Ctrl-C); 143 by SIGTERM. Outputs already committed are kept, none is partial
=====  =====================================================================================

:func:`run` is the single place where exceptions become exit codes, for every command. Usage errors come
from typer's own copy of click (``typer._click``), not from the ``click`` package, so both are recognised.
Interrupts are turned into :class:`Interrupted` by our own signal handlers: typer would otherwise catch
``KeyboardInterrupt`` and hand back status 130 as a *return value* (``standalone_mode=False``), which the old
entry point dropped, exiting 0 without a word. ``--debug`` (anywhere on the command line) or
``VIDTRACK_DEBUG=1`` adds the traceback above the line.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from vidtrack.errors import VidtrackError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

_ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                       errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                       errno.EROFS: "read-only file system"}
"""OSErrors that the user's environment causes (not our bugs): reported as bad input, exit 2."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A ``BaseException`` that is not ``KeyboardInterrupt``, so neither typer nor an
    ``except Exception`` anywhere swallows it, while every ``finally`` (temporary files, open videos) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class Progress:
    """Where a command is and what it has kept, for the one line printed when it is interrupted.

    Commands update it as they go (``PROGRESS.where = "at frame 57 of 300"``); the defaults fit a command that
    writes nothing until the end.
    """

    where: str | None = None
    kept: str = "nothing written"

    def reset(self) -> None:
        self.where, self.kept = None, "nothing written"


PROGRESS = Progress()


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread; returns the previous handlers.

    A SIGINT that is ignored when we start (a job started with ``&`` by a non-interactive shell) stays ignored,
    as Python itself does and shells expect. Outside the main thread (an embedding program) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back what :func:`install_signal_handlers` replaced (``main()`` called in-process, e.g. by tests)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` before any ``--`` separator, or ``VIDTRACK_DEBUG`` set to 1/true/yes."""
    head = list(argv[: list(argv).index("--")]) if "--" in argv else list(argv)
    return "--debug" in head or os.environ.get("VIDTRACK_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def strip_debug(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--debug`` (accepted anywhere, so it need not precede the command name)."""
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)
    return [a for a in args[:cut] if a != "--debug"] + args[cut:]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """``ClickException`` of typer's bundled click and, when installed, of the ``click`` package."""
    types: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        types.append(TyperClickException)
    except ImportError:  # pragma: no cover - older typer re-exports the click package
        pass
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _abort_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    try:
        import typer

        types.append(typer.Abort)
    except ImportError:  # pragma: no cover
        pass
    try:
        import click

        types.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _exit_code_of(value: Any) -> int:
    """What a command (or typer, for ``typer.Exit``) returned, as an exit status."""
    return value if isinstance(value, int) and not isinstance(value, bool) else EXIT_OK


def environment_error_line(e: OSError, where: str | None = None) -> str | None:
    """One line for an OSError the environment causes (full disk, no permission), else None. ``where`` says
    what was going on (``PROGRESS.where``) when the error itself names no file."""
    what = _ENVIRONMENT_ERRNOS.get(e.errno or -1)
    if what is None:
        return None
    place = f" ({e.filename})" if e.filename else (f" {where}" if where else "")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{what}{place}; no file was left half-written (outputs are written to temporary names and "
                "renamed when complete); free some space or choose another --out")
    return f"{what}{place}: {_one_line(e.strerror or str(e))}"


def run(invoke: Callable[[list[str]], Any], argv: Sequence[str],
        error: Callable[[str], None] | None = None) -> int:
    """Run ``invoke(argv)`` (the typer app in non-standalone mode) and return the exit status.

    Every way a command can end is mapped here, for every command; ``error`` prints one message line (the
    default writes ``error: ...`` to stderr).
    """
    debug = debug_requested(argv)
    args = strip_debug(argv)
    say = error or (lambda line: print(line, file=sys.stderr, flush=True))

    def tb() -> None:
        if debug:
            traceback.print_exc()

    PROGRESS.reset()
    previous = install_signal_handlers()
    try:
        return _exit_code_of(invoke(args))
    except SystemExit as e:  # sys.exit(1) from batch, --help, --version
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_FAILED)
    except Interrupted as e:
        tb()
        where = f" {PROGRESS.where}" if PROGRESS.where else ""
        say(f"interrupted{where} ({signal.Signals(e.signum).name}); {PROGRESS.kept}")
        return e.exit_code
    except KeyboardInterrupt:  # raised by a library itself, or before our handler was installed
        tb()
        say(f"interrupted; {PROGRESS.kept}")
        return 128 + signal.SIGINT
    except VidtrackError as e:
        tb()
        say(f"error: {_one_line(str(e))}")
        return EXIT_BAD_INPUT
    except _usage_error_types() as e:
        tb()
        say(usage_error_line(e))
        return int(getattr(e, "exit_code", EXIT_BAD_INPUT))
    except _abort_types():
        tb()
        say("aborted")
        return EXIT_FAILED
    except OSError as e:
        tb()
        line = environment_error_line(e, PROGRESS.where)
        if line is not None:
            say(f"error: {line}")
            return EXIT_BAD_INPUT
        say(_internal(e, debug))
        return EXIT_FAILED
    except Exception as e:
        tb()
        say(_internal(e, debug))
        return EXIT_FAILED
    finally:
        restore_signal_handlers(previous)
        sys.stdout.flush()


def usage_error_line(e: BaseException) -> str:
    """A click usage error (missing option, unknown command, bad value) as one line that names the problem and
    where to look, instead of click's three (usage, --help hint, message)."""
    fmt = getattr(e, "format_message", None)
    text = _one_line(fmt() if callable(fmt) else str(e)).rstrip(".")
    ctx = getattr(e, "ctx", None)
    path = getattr(ctx, "command_path", None) or "vidtrack"
    sep = " See" if text.endswith("?") else "; see"  # click's "Did you mean 'track'?"
    return f"error: {text[:1].lower()}{text[1:]}{sep} '{path} --help'"


def _internal(e: BaseException, debug: bool) -> str:
    text = _one_line(str(e))[:300]
    hint = "" if debug else "; rerun with --debug (or VIDTRACK_DEBUG=1) for the traceback"
    return f"error: internal error, {type(e).__name__}: {text}{hint}; please report it"
