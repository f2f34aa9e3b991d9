"""The user README stays short and every relative link in README.md and
docs/*.md points to a file of the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

# [text](target) and ![alt](target); the target ends at whitespace or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...
FENCE = re.compile(r"^\s*(```|~~~)")


def doc_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def relative_links(text: str):
    """(line number, target) of every relative link outside code blocks and
    inline code spans."""
    out, in_fence = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for target in LINK.findall(line):
            if EXTERNAL.match(target) or target.startswith("#"):
                continue
            out.append((no, target))
    return out


def test_link_parser_finds_relative_links_only():
    text = ("see [a](docs/a.md) and [b](https://x.org/b) and ![i](img/i.png \"title\") and [c](#anchor)\n"
            "`[not](a_link.md)`\n```\n[code](inside.md)\n```\n[d](../up.md#part)\n")
    assert relative_links(text) == [(1, "docs/a.md"), (1, "img/i.png"), (6, "../up.md#part")]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_docs_folder_holds_the_maintainer_docs():
    for name in ("architecture", "exactness", "benchmarks", "reliability", "lab"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path):
    broken = []
    for no, target in relative_links(path.read_text(encoding="utf-8")):
        file_part = target.split("#", 1)[0]
        resolved = (path.parent / file_part).resolve()
        if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
            broken.append(f"{path.relative_to(ROOT)}:{no}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
