"""The documentation agrees with the code: the generated config reference, the telemetry CSV table, links."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKDOWN = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def load_module(path: Path, name: str):
    """A module from its file, without importing the package around it (no torch needed)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_generated_from_the_schema():
    maker = load_module(DOCS / "make_config_reference.py", "make_config_reference")
    schema = yaml.safe_load(maker.SCHEMA_PATH.read_text(encoding="utf-8"))
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == maker.render(schema), (
        "docs/configuration.md is not what config/config.schema.yaml gives; regenerate it with "
        "`.venv/bin/python docs/make_config_reference.py --write`"
    )


def test_config_reference_lists_every_key_and_follows_the_schema():
    maker = load_module(DOCS / "make_config_reference.py", "make_config_reference")
    schema = yaml.safe_load(maker.SCHEMA_PATH.read_text(encoding="utf-8"))
    page = maker.render(schema)
    for section in ("data", "base_model", "generation", "telemetry", "report"):
        for key in schema["properties"][section]["properties"]:
            assert f"| `{section}.{key}` |" in page
    for section in ("training", "lora"):
        for key in schema["$defs"][section]["properties"]:
            assert f"| `{section}.{key}` |" in page
    # A changed description shows in the page, so a stale committed page fails the test above.
    schema["$defs"]["training"]["properties"]["packing"]["description"] = "a description changed in the schema"
    assert "a description changed in the schema" in maker.render(schema)


def markdown_table(text: str, header: str) -> list[list[str]]:
    """The body rows of the table whose header line is `header`, as lists of stripped cells."""
    lines = text.splitlines()
    start = lines.index(header)
    assert re.fullmatch(r"\|( --- \|)+", lines[start + 1]), lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_telemetry_csv_table_matches_the_schema():
    schema = load_module(REPO / "scripts" / "ftcompare" / "telemetry" / "schema.py", "telemetry_schema")
    text = (DOCS / "telemetry.md").read_text(encoding="utf-8")
    rows = markdown_table(text, "| column | unit | meaning |")
    documented = [(column.strip("`"), unit, meaning) for column, unit, meaning in rows]
    expected = [(column, schema.UNITS.get(column, ""), schema.DESCRIPTIONS[column]) for column in schema.CSV_COLUMNS]
    assert [row[0] for row in documented] == list(schema.CSV_COLUMNS), "columns, in the schema's order"
    assert documented == expected


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    found, seen = set(), {}
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        found.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return found


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_point_to_files_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # a URL
        path, _, fragment = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files or headings: {broken}"
