"""The documentation: the MkDocs site builds with --strict, and every relative link and anchor of
the Markdown files (docs/, README.md, bench/, examples/) points at something that exists.

MkDocs comes with `make install` (the `docs` extra); without it this test fails, never skips.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKDOWN = sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md",
                   *(REPO / "bench").glob("*.md"), *(REPO / "examples").glob("*/README.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE = re.compile(r"`[^`\n]*`")


def slugify(heading: str) -> str:
    from markdown.extensions.toc import slugify as toc_slugify  # what mkdocs.yml's toc uses

    return str(toc_slugify(heading, "-"))


def prose(path: Path) -> str:
    return CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.MULTILINE)
    return {slugify(re.sub(r"`([^`]*)`", r"\1", h)) for h in headings}


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    problems = []
    for target in LINK.findall(prose(path)):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def test_every_relative_link_and_anchor_resolves() -> None:
    assert len(MARKDOWN) > 10
    problems = [p for path in MARKDOWN for p in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title `x`: here\n\n[ok](#title-x-here) [bad](#nope) "
                                   "[gone](b.md) `[code](c.md)`\n")
    problems = [p.split(": ", 1)[1] for p in broken_links(tmp_path / "a.md", tmp_path)]
    assert problems == ["(#nope): no heading with anchor #nope in a.md", "(b.md): no such file"]


def test_site_builds_strict(tmp_path: Path) -> None:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail("mkdocs is not installed: run `make install` (the docs extra)")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pages = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert {"migrating-from-melissa", "architecture", "statistics"} <= pages
