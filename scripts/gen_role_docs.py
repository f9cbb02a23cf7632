"""Render docs/roles/<role>.md from each role's meta/argument_specs.yml.

    python scripts/gen_role_docs.py          write the pages
    python scripts/gen_role_docs.py --check  exit 1 when a page is out of date (used by the tests)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def plain(text: str) -> str:
    """Ansible doc markup (C(), I(), B(), V()) to Markdown."""
    text = re.sub(r"[CV]\(([^)]*)\)", r"`\1`", text)
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
            rows += option_rows(spec["options"], prefix=f"{prefix}{name}[].")
    return rows


def render(role: Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    out = [f"# Role `selfhosted.platform.{role.name}`", "",
           "<!-- Generated from meta/argument_specs.yml by scripts/gen_role_docs.py; do not edit. -->", ""]
    for entry, spec in specs.items():
        if entry != "main":
            out += [f"## Entry point `{entry}`", ""]
        out += [plain(spec.get("short_description", "")), ""]
        out += [plain(d) for d in as_list(spec.get("description", []))]
        out += ["", "| option | type | required | default | description |", "|---|---|---|---|---|"]
        out += option_rows(spec.get("options", {}))
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        page = ROOT / "docs" / "roles" / f"{role.name}.md"
        text = render(role)
        if page.exists() and page.read_text() == text:
            continue
        stale.append(str(page.relative_to(ROOT)))
        if not args.check:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text)
    if args.check and stale:
        print("out of date (run `python scripts/gen_role_docs.py`): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
