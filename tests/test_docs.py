"""The README and docs/ point at things that exist: every relative link names a file of this repository, and every
``#anchor`` a heading of the page it points into (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*```")


def _prose(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor_of(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"`|\*\*?", "", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor_of(line) for line in _prose(page) if line.startswith("#")}


def links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page) for m in _LINK.finditer(line)]


def test_the_docs_pages_exist_and_the_readme_links_each_of_them() -> None:
    pages = {p.name for p in PAGES[1:]}
    assert {"litellm.md", "operations.md", "langchain.md", "collect.md", "training.md", "results.md"} <= pages
    readme_links = set(links(ROOT / "README.md"))
    assert all(any(link.startswith(f"docs/{name}") for link in readme_links) for name in pages)


def test_anchor_of_follows_githubs_rules() -> None:
    assert anchor_of("## Limits: a cost ceiling and a quality floor") == "limits-a-cost-ceiling-and-a-quality-floor"
    assert anchor_of("## litellm's own routing record") == "litellms-own-routing-record"
    assert anchor_of("## routing_strategy_args") == "routing_strategy_args"
    assert anchor_of("## Roll it out: shadow, canary, then all traffic") == "roll-it-out-shadow-canary-then-all-traffic"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_names_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for link in links(page):
        if re.match(r"[a-z]+:", link):  # https:, mailto:, hf: ...
            continue
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{link}: no heading #{fragment} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_settings_tables_in_the_docs_are_made_from_the_settings_models() -> None:
    from litellm_prefill_router.settings_reference import RUNNABLE, SETTINGS, rendered

    pages = {"litellm.md": ["routing_strategy_args", "metadata.prefill", "autotune", "PrefillTierClassifier",
                            "PrefillRoutingPlugin"],
             "langchain.md": [RUNNABLE, "PrefillSemanticRouter"]}
    assert set(SETTINGS) | {RUNNABLE} == {name for names in pages.values() for name in names}
    for page, names in ((ROOT / "docs" / page, names) for page, names in pages.items()):
        text = page.read_text(encoding="utf-8")
        assert all(f"<!-- settings: {name} -->" in text for name in names), page.name
        assert rendered(text) == text, f"{page.name}'s settings tables are stale: run " \
                                       f"`prefill-router settings --write docs/{page.name}`"


def test_every_setting_is_described_and_its_row_shows_type_bounds_and_default() -> None:
    from litellm_prefill_router.settings_reference import SETTINGS, markdown_table, settings_models

    assert "PrefillRouterRunnable" in settings_models()  # langchain-core is installed in the test environments
    for name, model in settings_models().items():
        undescribed = [f for f, info in model.model_fields.items() if not info.description]
        assert not undescribed, f"{name} settings without a description: {undescribed}"
    table = markdown_table(SETTINGS["routing_strategy_args"])
    assert "| `bundle` | string | required |" in table
    assert "| `lambda` | number (>= 0) | - |" in table  # the alias users write, not the field's name
    assert "| `decision_timeout_s` | number (> 0, <= 600) | - |" in table
    assert "| `on_error` | `fallback` \\| `raise` | `fallback` |" in table
    assert "| `reroute_retries` | bool | `true` |" in table
    assert "| `execution_providers` | list (not empty) | - |" in table
    assert len(table.splitlines()) == 2 + len(SETTINGS["routing_strategy_args"].model_fields)


def test_the_settings_command_offers_every_settings_table() -> None:
    import argparse

    from litellm_prefill_router.cli import build_parser
    from litellm_prefill_router.settings_reference import RUNNABLE, SETTINGS

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    name = next(a for a in commands.choices["settings"]._actions if a.dest == "name")
    assert list(name.choices) == [*SETTINGS, RUNNABLE]  # hand-kept: importing the models adds ~30 ms to each CLI start


def test_settings_command_prints_a_table_and_rewrites_stale_ones_between_markers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.cli import main

    assert main(["settings", "autotune"]) == 0
    assert "| `window` | int (>= 20, <= 1,000,000) | `2000` |" in capsys.readouterr().out
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- settings: autotune -->\n| stale |\n<!-- /settings -->\nafter\n")
    assert main(["settings", "--write", str(page)]) == 0
    text = page.read_text()
    assert "| stale |" not in text and "| `every` | int" in text and text.endswith("<!-- /settings -->\nafter\n")
    assert main(["settings", "--write", str(page)]) == 0
    assert "already current" in capsys.readouterr().out
    (tmp_path / "none.md").write_text("no tables here\n")
    assert main(["settings", "--write", str(tmp_path / "none.md")]) == 2
    assert "no settings table markers" in capsys.readouterr().err
    assert main(["settings", "--write", str(tmp_path / "missing.md")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_every_error_the_package_exports_is_in_the_errors_table() -> None:
    import litellm_prefill_router as pkg
    from litellm_prefill_router.errors import PrefillRouterError

    page = (ROOT / "docs" / "litellm.md").read_text()
    table = page[page.index("## Errors"):page.index("## Retries go elsewhere")]
    exported = [n for n in pkg.__all__ if isinstance(getattr(pkg, n), type) and issubclass(getattr(pkg, n),
                                                                                          PrefillRouterError)]
    assert len(exported) >= 8 and [n for n in exported if f"`{n}`" not in table] == []
