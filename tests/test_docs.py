"""The documentation cannot drift from the code: the configuration page is generated, every
benchmark number it quotes is written from the records in simulations/results/, and what a reader
follows from the README leads somewhere."""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import config_docs
from shared.config import knob
from shared.errors import FedrecError
from simulations import doc_numbers, page, records

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


# ---- Every benchmark number in the docs comes from the records in simulations/results/ ----------


def test_the_committed_results_page_is_the_generated_one() -> None:
    committed = (records.RESULTS / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert committed == page.render(), "BENCHMARKS.md is stale: run `python -m simulations.page` and commit it"


def test_every_quoted_result_is_what_the_records_say_now() -> None:
    assert doc_numbers.stale() == [], "run `python -m simulations.page` and commit the pages it rewrites"


def test_no_benchmark_number_is_typed_into_the_readme_or_docs() -> None:
    assert doc_numbers.hand_typed() == [], "quote it in a <!-- results:NAME --> span (simulations/doc_numbers.py)"


def test_a_number_typed_into_a_copy_of_the_docs_is_found(tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    for page_path in doc_numbers.pages():
        (tmp_path / page_path.relative_to(ROOT)).write_text(page_path.read_text(encoding="utf-8"), encoding="utf-8")
    assert doc_numbers.hand_typed(tmp_path) == []
    cli = tmp_path / "docs" / "cli.md"
    cli.write_text(cli.read_text(encoding="utf-8") + "\nKnown-item search: MRR 0.123.\n", encoding="utf-8")
    assert doc_numbers.hand_typed(tmp_path) == ["docs/cli.md: 0.123"]


def test_results_are_told_apart_from_versions_addresses_commands_and_quoted_spans() -> None:
    results = "p50 19 ms, 380 req/s, 4.4 GiB peak, 1.44x a plain step, ratio 0.58, 1,000 ms"
    assert doc_numbers.typed_numbers(results) == ["19 ms", "380 req/s", "4.4 GiB", "1.44x", "0.58", "1,000 ms"]
    not_results = ("Flower 1.42 on 127.0.0.1, PyTorch 2.13.0, `--weight 0.3`, `fedrec train\n  --lr 0.05`, "
                   "[a record](x-lr0.005.md), 10 x 10 rounds, epsilon 8, 10% of users, delta 1e-6, "
                   "<!-- results:scale -->33.8 s<!-- /results:scale -->\n```\nlr=0.05\n```\n")  # fmt: skip
    assert doc_numbers.typed_numbers(not_results) == []


def test_a_span_is_rewritten_in_place_and_a_bad_marker_is_refused() -> None:
    blocks = {"inline": lambda: "new", "lines": lambda: "| a |\n| b |"}
    text = "x <!-- results:inline -->old<!-- /results:inline --> y\n<!-- results:lines -->\nold\n<!-- /results:lines -->\n"
    assert doc_numbers.fill(text, "p.md", blocks) == \
        "x <!-- results:inline -->new<!-- /results:inline --> y\n<!-- results:lines -->\n| a |\n| b |\n<!-- /results:lines -->\n"  # fmt: skip
    with pytest.raises(FedrecError, match=r"^p\.md: no generator for <!-- results:nope -->"):
        doc_numbers.fill("<!-- results:nope -->1<!-- /results:nope -->", "p.md", blocks)
    with pytest.raises(FedrecError, match=r"^p\.md: a <!-- results:NAME --> marker without its"):
        doc_numbers.fill("<!-- results:inline -->old", "p.md", blocks)


def test_a_goal_is_met_or_not_as_the_record_says() -> None:
    assert doc_numbers._verdict([0.58], [0.5], "at least") == "met"
    assert doc_numbers._verdict([19.1, 50.2], [20, 50], "at most") == "**not met**"
    assert doc_numbers._verdict([0.051, 0.62], [0.051, 0.6], "above") == "**not met**"


def test_a_missing_record_is_one_line_and_changes_no_page(tmp_path, monkeypatch, capsys) -> None:
    for module in (records, page, doc_numbers):
        monkeypatch.setattr(module, "RESULTS", tmp_path)
    before = {p: p.read_text(encoding="utf-8") for p in doc_numbers.pages()}
    assert page.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("page: error: simulations/results/") and "is missing" in err[0]
    assert not (tmp_path / "BENCHMARKS.md").exists()
    assert {p: p.read_text(encoding="utf-8") for p in doc_numbers.pages()} == before
