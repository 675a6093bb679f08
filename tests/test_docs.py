"""README.md and docs/: every relative link resolves, and the README stays a front page.

Links and images are Markdown's ``[text](target)`` and ``![alt](target)``
outside code; a target with a scheme (``https:``, ``mailto:``) is not
checked. A ``#anchor`` must name a heading of the target page, slugged as
GitHub does (lower case, punctuation dropped, spaces to hyphens).
"""

import re
from pathlib import Path

import pytest

import helpers

README = helpers.ROOT / "README.md"
PAGES = [README, *sorted((helpers.ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    return CODE.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    """The link and image targets of a Markdown file, in order."""
    return LINK.findall(_prose(path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: ``The `table1` recipe`` -> ``the-table1-recipe``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_the_docs_pages_exist():
    assert len(PAGES) > 1, "docs/*.md is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(helpers.ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved.relative_to(helpers.ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_docs_page_links_back_to_the_readme():
    for page in PAGES[1:]:
        assert "../README.md" in links(page), f"{page.name} does not link back to the README"


def test_the_readme_indexes_every_docs_page():
    indexed = set(links(README))
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in indexed, f"README.md does not link to docs/{page.name}"


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it to 250 (docs/ for more)"
    first_screen = "\n".join(lines[:40])
    for command in ("make train", "make test"):
        assert command in first_screen, f"{command!r} is not in README.md's first 40 lines"


def test_the_link_checker_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `code` title\n[a](b.md#c) ![i](img.png) `[no](x)`\n"
                    "```\n[no](y)\n```\n[w](https://example.com)\n")
    assert links(page) == ["b.md#c", "img.png", "https://example.com"]
    assert anchors(page) == {"a-code-title"}
