"""Golden files: expected outputs kept verbatim. MELISSA_UPDATE_GOLDEN=1 rewrites them (then
review the diff before committing it)."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MELISSA_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with MELISSA_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(), f"{name} differs from its golden file {path}"
