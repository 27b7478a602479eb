"""What every `memwall` command shares: the consoles and the rule that a user's mistake is one line on stderr and
exit code 2 (sim.errors.UserError, or an OSError on a named path), while anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import functools

import typer
from rich.console import Console

from sim.errors import UserError

# wide enough for the comparison tables when output goes to a pipe or a file (rich assumes 80 columns there)
console = Console() if Console().is_terminal else Console(width=160)
err_console = Console(stderr=True)


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as e:
            # a path the user gave that cannot be read or written (a folder for a file, a missing folder, no
            # permission): the commands check the likely ones up front, before any work; this catches the rest
            if e.filename is None:
                raise
            err_console.print(f"[bold red]error:[/] cannot use {e.filename}: {e.strerror}", markup=True,
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def check_writable(path, option: str) -> None:
    """One sentence unless `path` can be written as a file: not a folder, its folder there or made. Commands call it
    before their work, so that a bad output path never costs a finished run."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option}: {path} is a folder; give the path of the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option}: cannot create {path.parent}: {e.strerror}") from None
