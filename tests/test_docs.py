"""The documentation cannot drift from the code: the configuration page is generated, and what
a reader follows from the README leads somewhere."""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import config_docs
from shared.config import knob
from shared.errors import FedrecError

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_configuration_page_is_the_generated_one() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_docs.render(), "docs/configuration.md is stale: run `make docs` and commit it"


def test_a_default_is_written_as_the_manifest_writes_it() -> None:
    assert [config_docs.default_text(v) for v in (True, "", "fedavg", 1e-6, 3600.0, 3)] == \
        ["true", '""', "fedavg", "1e-6", "3600.0", "3"]  # fmt: skip


def test_the_generator_writes_the_page_and_refuses_an_unwritable_path(tmp_path, capsys) -> None:
    out = tmp_path / "configuration.md"
    assert config_docs.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_docs.render()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert config_docs.main(["--out", str(blocked / "configuration.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("config_docs: error: cannot write")


def test_a_key_documented_by_two_dataclasses_is_refused(monkeypatch) -> None:
    @dataclass(frozen=True)
    class A:
        seed: int = knob(1, "one meaning")

    @dataclass(frozen=True)
    class B:
        seed: int = knob(1, "another")

    monkeypatch.setattr(config_docs, "RUN_CONFIGS", (A, B))
    with pytest.raises(FedrecError, match="'seed' is documented in both A and B"):
        config_docs.documented_keys()


README_LIMIT = 12 * 1024  # bytes: a README read in five minutes; the details live in docs/
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    titles = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `page` whose file (or, into a Markdown page, heading) is missing."""
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:: not ours to check offline
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return broken


def test_the_readme_is_read_in_five_minutes() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move details to docs/"


def test_every_relative_link_in_the_readme_and_docs_leads_somewhere() -> None:
    assert [b for page in pages() for b in broken_links(page)] == []


def test_a_broken_link_or_heading_is_found(tmp_path) -> None:
    (tmp_path / "there.md").write_text("# A heading: here\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-heading-here) [gone](missing.md) [bad](there.md#nowhere) "
                    "[web](https://example.org/x) `[code](nothere.md)`\n", encoding="utf-8")  # fmt: skip
    assert broken_links(page, tmp_path) == ["page.md: missing.md (no such file)",
                                            "page.md: there.md#nowhere (no such heading)"]  # fmt: skip
