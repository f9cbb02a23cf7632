"""Render the reference docs: docs/roles/<role>.md from each role's meta/argument_specs.yml and
docs/modules/<module>.md from each module's DOCUMENTATION, EXAMPLES and RETURN.

    python scripts/gen_docs.py          write the pages
    python scripts/gen_docs.py --check  exit 1 when a page is out of date (used by the tests)
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def plain(text: str) -> str:
    """Ansible doc markup (C(), I(), B(), V()) to Markdown."""
    text = re.sub(r"[CVO]\(([^)]*)\)", r"`\1`", text)
    text = re.sub(r"RV\(([^)]*)\)", r"`\1`", text)
    text = re.sub(r"I\(([^)]*)\)", r"*\1*", text)
    return re.sub(r"B\(([^)]*)\)", r"**\1**", text)


def as_list(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def fmt_default(value) -> str:
    if value is None:
        return ""
    return f"`{yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix('...').strip()}`"


def option_rows(options: dict, prefix: str = "") -> list[str]:
    rows = []
    for name, spec in options.items():
        typ = spec.get("type", "str")
        if spec.get("elements"):
            typ += f" of {spec['elements']}"
        desc = " ".join(plain(d) for d in as_list(spec.get("description", "")))
        if spec.get("choices"):
            desc += " Choices: " + ", ".join(f"`{c}`" for c in spec["choices"]) + "."
        req = "yes" if spec.get("required") else ""
        rows.append(f"| `{prefix}{name}` | {typ} | {req} | {fmt_default(spec.get('default'))} | {desc} |")
        if spec.get("options"):
            rows += option_rows(spec["options"], prefix=f"{prefix}{name}{'[].' if spec.get('type') == 'list' else '.'}")
    return rows


def render(role: Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    out = [f"# Role `selfhosted.platform.{role.name}`", "",
           "<!-- Generated from meta/argument_specs.yml by scripts/gen_docs.py; do not edit. -->", ""]
    for entry, spec in specs.items():
        if entry != "main":
            out += [f"## Entry point `{entry}`", ""]
        out += [plain(spec.get("short_description", "")), ""]
        out += [plain(d) for d in as_list(spec.get("description", []))]
        out += ["", "| option | type | required | default | description |", "|---|---|---|---|---|"]
        out += option_rows(spec.get("options", {}))
        out.append("")
    return "\n".join(out)


def module_blocks(path: Path) -> dict[str, str]:
    """DOCUMENTATION / EXAMPLES / RETURN string constants of a module, read without importing it."""
    tree = ast.parse(path.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                    out[target.id] = node.value.value
    return out


def return_rows(values: dict, prefix: str = "") -> list[str]:
    rows = []
    for name, spec in values.items():
        desc = " ".join(plain(d) for d in as_list(spec.get("description", "")))
        rows.append(f"| `{prefix}{name}` | {spec.get('type', '')} | {plain(str(spec.get('returned', '')))} | {desc} |")
        if isinstance(spec.get("contains"), dict):
            rows += return_rows(spec["contains"], prefix=f"{prefix}{name}.")
    return rows


def render_module(path: Path) -> str:
    blocks = module_blocks(path)
    doc = yaml.safe_load(blocks["DOCUMENTATION"])
    ret = yaml.safe_load(blocks.get("RETURN") or "{}") or {}
    name = doc["module"]
    out = [f"# Module `selfhosted.platform.{name}`", "",
           "<!-- Generated from the module's DOCUMENTATION by scripts/gen_docs.py; do not edit. -->", "",
           plain(doc.get("short_description", "")), ""]
    out += [f"- {plain(d)}" for d in as_list(doc.get("description", []))]
    if doc.get("requirements"):
        out += ["", "Requirements:", ""] + [f"- {plain(r)}" for r in doc["requirements"]]
    out += ["", "## Options", "", "| option | type | required | default | description |", "|---|---|---|---|---|"]
    out += option_rows(doc.get("options", {}))
    if doc.get("attributes"):
        out += ["", "## Attributes", "", "| attribute | support | description |", "|---|---|---|"]
        for attr, spec in doc["attributes"].items():
            desc = " ".join(plain(d) for d in as_list(spec.get("description", "")))
            out.append(f"| {attr} | {spec.get('support')} | {desc} |")
    if doc.get("notes"):
        out += ["", "## Notes", ""] + [f"- {plain(n)}" for n in doc["notes"]]
    out += ["", "## Examples", "", "```yaml", blocks.get("EXAMPLES", "").strip(), "```"]
    out += ["", "## Return values", "", "| key | type | returned | description |", "|---|---|---|---|"]
    out += return_rows(ret)
    out.append("")
    return "\n".join(out)


def pages() -> dict[Path, str]:
    result = {}
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        result[ROOT / "docs" / "roles" / f"{role.name}.md"] = render(role)
    for module in sorted((ROOT / "plugins" / "modules").glob("*.py")):
        if module.name != "__init__.py":
            result[ROOT / "docs" / "modules" / f"{module.stem}.md"] = render_module(module)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for page, text in pages().items():
        if page.exists() and page.read_text() == text:
            continue
        stale.append(str(page.relative_to(ROOT)))
        if not args.check:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text)
    if args.check and stale:
        print("out of date (run `python scripts/gen_docs.py`): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
