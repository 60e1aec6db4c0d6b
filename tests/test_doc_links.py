"""Documentation checks: every relative link and image in README.md and docs/*.md points at a file or folder
of the repository, the README stays small, and no document cites reference notes that are not in the repo.
Standard library only, no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_BYTES = 25_000
EXTERNAL = ("http:", "https:", "mailto:")
#: reference notes that are not part of this repo (named without their suffix so this file cites none)
FORBIDDEN = tuple(f"{name}.md" for name in ("diffusers-notes", "anchors"))

# [text](target) and ![alt](target); the target may carry a "title" after a space.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def strip_code(text: str) -> str:
    """Drop fenced code blocks and inline code spans, where brackets are not links."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            lines.append("")
            continue
        lines.append("" if in_fence else re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def links(path: Path) -> list[str]:
    return LINK.findall(strip_code(path.read_text(encoding="utf-8")))


def local_target(target: str) -> str | None:
    """The path part of a relative link, or None for absolute URLs and pure anchors."""
    if target.startswith(EXTERNAL) or target.startswith("#"):
        return None
    return target.split("#", 1)[0].split("?", 1)[0] or None


def test_doc_files_exist():
    assert README.is_file()
    assert len(doc_files()) > 1, "docs/*.md pages are missing"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(doc: Path):
    missing = []
    for target in links(doc):
        rel = local_target(target)
        if rel is not None and not (doc.parent / rel).exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)}: links to missing files: {missing}"


def test_link_parser_finds_links_and_images():
    text = "See [a](docs/x.txt#y), ![img](docs/p.png) and `[not](code.txt)`.\n```\n[no](fenced.txt)\n```\n"
    assert LINK.findall(strip_code(text)) == ["docs/x.txt#y", "docs/p.png"]
    assert local_target("https://example.com/a.txt") is None
    assert local_target("#section") is None
    assert local_target("docs/methods.md#motion-module") == "docs/methods.md"


def test_readme_size():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (limit {README_MAX_BYTES})"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_external_reference_notes(doc: Path):
    text = doc.read_text(encoding="utf-8")
    found = [name for name in FORBIDDEN if name in text]
    assert not found, f"{doc.relative_to(ROOT)} mentions {found}, which are not in this repository"


CODE_DOC_REF = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")
NOTE_CITATION = re.compile(r"(?<![/\w])(formats|methods|diffusers-notes|anchors)\.md")


def slugs(path: Path) -> set[str]:
    """GitHub-style anchors of a markdown file's headings."""
    out = set()
    for line in strip_code(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


def code_files() -> list[Path]:
    dirs = ("motion_adapters", "clips", "training", "inference", "shapes", "app", "configs", "tests", "bench")
    return [p for d in dirs for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".yaml")
            and p.name != Path(__file__).name]


def test_code_cites_only_docs_in_the_repo():
    """Comments, docstrings, help texts and configs point at our docs/ pages (file and heading exist) and
    never at notes that are not in the repo."""
    bad = []
    for path in code_files():
        text = path.read_text(encoding="utf-8")
        for m in CODE_DOC_REF.finditer(text):
            page = ROOT / "docs" / m.group(1)
            if not page.exists() or (m.group(2) and m.group(2) not in slugs(page)):
                bad.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
        bad += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in NOTE_CITATION.finditer(text)]
    assert bad == []
