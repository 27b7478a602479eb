"""What every `memwall` command shares: the consoles and the rule that a user's mistake is one line on stderr and
exit code 2 (sim.errors.UserError), while anything else is a bug and keeps its traceback."""

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

    return wrapper
