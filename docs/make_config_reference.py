"""Write docs/configuration.md, the reference of every config key, from config/config.schema.yaml.

The schema is the one home of each key's description; this page only lays it out, so regenerate it
after any change to the schema (tests/test_docs.py fails until you do):

    .venv/bin/python docs/make_config_reference.py --write
    .venv/bin/python docs/make_config_reference.py > docs/configuration.md   # the same
"""

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "config" / "config.schema.yaml"
OUTPUT_PATH = REPO / "docs" / "configuration.md"

HEADER = """\
# Configuration: every key

<!-- Generated from config/config.schema.yaml by docs/make_config_reference.py: do not edit by hand.
     Regenerate: .venv/bin/python docs/make_config_reference.py --write -->

Generated from [config/config.schema.yaml](../config/config.schema.yaml), the one place each key is
defined and described; regenerate with `.venv/bin/python docs/make_config_reference.py --write`.
The config is checked against the schema before any job starts: a missing key takes its default,
an unknown key is refused, and every problem is named at once. `config/config.yaml` (the embedded
default) is the config Snakemake loads; a file passed with `--configfile` is merged over it.
Why each speed option is there and what it costs: [performance.md](performance.md#speed-options).
"""


BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def resolve(node: dict, schema: dict) -> dict:
    """`node` with a local `$ref` replaced by what it points to (keys beside the `$ref` win)."""
    if "$ref" not in node:
        return node
    target = schema
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    merged = dict(resolve(target, schema))
    merged.update({key: value for key, value in node.items() if key != "$ref"})
    return merged


def inline(value) -> str:
    """A value as it would be written in the config (YAML flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def code(value) -> str:
    """A value as inline code."""
    return f"`{inline(value)}`"


def default(node: dict) -> str:
    """The default as it would be written in the config, or nothing where there is none."""
    return code(node["default"]) if "default" in node else ""


def describe_type(node: dict, schema: dict) -> str:
    """What a key allows: its type or allowed values, and its bounds."""
    node = resolve(node, schema)
    if "enum" in node:
        return "one of " + ", ".join(code(value) for value in node["enum"])
    if "oneOf" in node:
        return " or ".join(describe_type(option, schema) for option in node["oneOf"])
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    texts = [describe_one(kind, node, schema) for kind in kinds if kind != "null"]
    return " or ".join(texts + (["null"] if "null" in kinds else []))


def describe_one(kind: str, node: dict, schema: dict) -> str:
    """What one JSON Schema type of `node` allows."""
    if kind == "array":
        items = resolve(node.get("items", {}), schema)
        item = describe_type(items, schema) if items else "value"
        text = "list of " + (item.replace("one of", "values from", 1) if "enum" in items else item + "s")
        if node.get("minItems"):
            text += f" (at least {node['minItems']})"
        return text
    if kind == "object":
        return "mapping"
    if kind == "string":
        return "non-empty string" if node.get("minLength") else "string"
    bounds = [f"{sign} {inline(node[keyword])}" for keyword, sign in BOUNDS if keyword in node]
    return kind + (" " + ", ".join(bounds) if bounds else "")


def cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(node: dict, schema: dict, path: str):
    """(key path, allowed, default, description) for each key under `node`, depth first."""
    node = resolve(node, schema)
    required = set(node.get("required", ()))
    for key, raw in node.get("properties", {}).items():
        sub = resolve(raw, schema)
        key_path = f"{path}.{key}" if path else key
        given = "required" if key in required else default(sub)
        shared = raw.get("$ref", "").removeprefix("#/$defs/")
        if shared in schema["properties"]:
            # A section defined once in $defs and listed in full where it stands at the top level.
            allowed = f"mapping: any key of [`{shared}`](#{shared})"
            yield key_path, allowed, given, sub.get("description", "")
            continue
        yield key_path, describe_type(sub, schema), given, sub.get("description", "")
        yield from children(sub, schema, key_path)


# What the user's own keys name, in a mapping whose keys the user names (the rest: runs).
NAMED_ITEMS = {"eval_sets": "set", "methods": "method"}


def children(node: dict, schema: dict, path: str):
    """The keys inside a mapping: named ones, and those of a mapping whose keys the user names."""
    if "properties" in node:
        yield from rows(node, schema, path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        placeholder = NAMED_ITEMS.get(path.rsplit(".", 1)[-1], "run")
        yield from rows(resolve(extra, schema), schema, f"{path}.<{placeholder}>")


def table(entries) -> list[str]:
    """A Markdown table of (key path, allowed, default, description) rows."""
    lines = ["| key | allowed | default | description |", "| --- | --- | --- | --- |"]
    for key_path, allowed, given, description in entries:
        lines.append(f"| `{key_path}` | {cell(allowed)} | {cell(given)} | {cell(description)} |")
    return lines


def render(schema: dict) -> str:
    """The whole page for `schema`."""
    lines = [HEADER, "## Top level", ""]
    sections = []
    scalars = []
    for key, raw in schema["properties"].items():
        node = resolve(raw, schema)
        (sections if node.get("type") == "object" else scalars).append((key, node))
    lines += table(
        (key, describe_type(node, schema), default(node), node.get("description", "")) for key, node in scalars
    )
    for key, node in sections:
        lines += ["", f"## {key}", ""]
        notes = [" ".join(node.get("description", "").split())]
        if "propertyNames" in node:
            names = node["propertyNames"]
            notes.append(f"Each name matches `{names['pattern']}` and is not {code(names['not']['const'])}.")
        if node.get("minProperties"):
            notes.append(f"It needs at least {node['minProperties']} entry.")
        if node.get("default") not in (None, {}):
            notes.append(f"Default: {code(node['default'])}.")
        if any(notes):
            lines += [" ".join(note for note in notes if note), ""]
        lines += table(children(node, schema, key))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT_PATH.relative_to(REPO)} (else stdout)")
    args = parser.parse_args(argv)
    text = render(yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8")))
    if args.write:
        OUTPUT_PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
