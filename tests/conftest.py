import json

import pytest
from typer.testing import CliRunner

from validation.cli import app


@pytest.fixture
def cli():
    """Invoke `memwall ARGS...`; returns (exit code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str):
        r = runner.invoke(app, list(args))
        if r.exception and not isinstance(r.exception, SystemExit):
            raise r.exception
        return r.exit_code, r.stdout, r.stderr

    return invoke


@pytest.fixture
def cli_json(cli):
    def invoke(*args: str) -> dict:
        code, out, err = cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    return invoke
