"""MkDocs hooks (mkdocs.yml ``hooks:``): the parts of the docs site that are generated from the code.

A page asks for generated text with a comment on a line of its own, replaced when the site is built:

- ``<!-- generate: settings processor.settings:Settings -->``: a table of every field of a pydantic
  settings class (environment variable, CLI flag, default, description; ``... no-flags`` leaves the flags
  out, for a class whose fields are not all flags);
- ``<!-- generate: schema image-classification -->``: the fields of ``processor/schemas/NAME.schema.json``
  and the schema itself;
- ``<!-- generate: alert NAME -->``: an alert rule of ``deploy/prometheus/alerts.yml`` as Prometheus runs it;
- ``<!-- generate: schemas -->``: every schema of ``processor/schemas`` that the page does not name, under
  a heading of its own (nothing when it names them all);
- ``<!-- generate: alerts -->``: every alert rule, linked to its runbook page.

``docs/reference/commands.md`` renders ``processor.dev.docs:cli`` with mkdocs-click: the ``processor``
group with its lazily loaded commands resolved, so the page lists every command ``processor --help`` does.

Files that live elsewhere in the repository (the model card, the changelog, the benchmark report and its
plots) are added to the site at the paths in ``EXTRA_FILES``, so the site shows them without copies that could
drift. Anything that does not match (an unknown marker, an alert without a runbook page or whose
``runbook_url`` points elsewhere) is logged as a warning, which ``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import importlib
import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

import click
import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "processor" / "schemas"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOKS = "operations/runbooks"
# Site path -> repository path.
EXTRA_FILES = {
    "model/card.md": "processor/models/default/MODEL_CARD.md",
    "changelog.md": "CHANGELOG.md",
    "benchmarks/README.md": "benchmarks/README.md",
}
EXTRA_GLOBS = {"benchmarks/results": "benchmarks/results/*.png"}
MARKER = re.compile(r"^<!-- generate: (\S+)(?: (\S+))?( no-flags)? -->$", re.MULTILINE)

log = logging.getLogger("mkdocs.hooks.processor_docs")


def __getattr__(name: str) -> click.Group:
    """``cli``, built when mkdocs-click asks for it (not at import, which the hooks also do)."""
    if name == "cli":
        return resolved_cli()
    raise AttributeError(name)


def resolved_cli() -> click.Group:
    """The ``processor`` group with every lazy command imported (mkdocs-click reads ``Group.commands``)."""
    from processor.cli import main

    ctx = click.Context(main, info_name="processor")
    commands = {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}
    group = click.Group(
        name="processor",
        commands={name: cmd for name, cmd in commands.items() if cmd is not None},
        help=main.help,
        context_settings=main.context_settings,
    )
    group.params = list(main.params)
    return group


def runbook_url(alert: str) -> str:
    """Where an alert rule's ``runbook_url`` annotation must point: its page in this repository."""
    return f"docs/{RUNBOOKS}/{alert}.md"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the repository files the site shows in place (model card, changelog, benchmark report and plots)."""
    extra = dict(EXTRA_FILES)
    for site_dir, pattern in EXTRA_GLOBS.items():
        extra.update({f"{site_dir}/{path.name}": str(path.relative_to(ROOT)) for path in sorted(ROOT.glob(pattern))})
    for site_path, repo_path in extra.items():
        files.append(File.generated(config, site_path, abs_src_path=str(ROOT / repo_path)))
    for alert in alert_rules():
        if files.get_file_from_path(f"{RUNBOOKS}/{alert['alert']}.md") is None:
            log.warning("alert %s has no runbook page %s/%s.md", alert["alert"], RUNBOOKS, alert["alert"])
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace each ``<!-- generate: ... -->`` line of a page with the text it asks for."""

    def replace(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "settings" and arg:
            return settings_table(_import(arg), flags=not match.group(3))
        if kind == "schema" and arg:
            return schema_section(arg)
        if kind == "alert" and arg:
            return alert_section(arg)
        if kind == "alerts":
            return alerts_table(page.file.src_uri)
        if kind == "schemas":
            named = set(re.findall(r"^<!-- generate: schema (\S+) -->$", markdown, re.MULTILINE))
            others = [schema_section(path.name.removesuffix(".schema.json")) for path in other_schemas(named)]
            return "\n\n".join(["## Other schemas", *others]) if others else ""
        log.warning("%s: unknown marker %r", page.file.src_uri, match.group(0))
        return match.group(0)

    return MARKER.sub(replace, markdown)


def _import(target: str) -> type[BaseSettings]:
    module, _, name = target.partition(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "(empty)"
    if isinstance(value, Path) and value.is_relative_to(ROOT):
        return str(value.relative_to(ROOT))
    return "(empty)" if value == "" else str(value)


def settings_table(cls: type[BaseSettings], flags: bool = True) -> str:
    """One row per field: environment variable, CLI flag (``--field-name``), default and description."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    head = ["variable", *(["flag"] if flags else []), "default", "meaning"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, field in cls.model_fields.items():
        cells = [
            f"`{prefix}{name.upper()}`",
            *([f"`--{name.replace('_', '-')}`"] if flags else []),
            f"`{_cell(_default(field.get_default(call_default_factory=True)))}`",
            _cell(field.description),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _type(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "object" if "properties" in spec else "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in spec:
        text += ": " + ", ".join(f"`{value}`" for value in spec["enum"])
    if "format" in spec:
        text += f" ({spec['format']})"
    return text


def _fields(spec: dict[str, Any], prefix: str = "") -> list[str]:
    rows = []
    required = set(spec.get("required", []))
    for name, sub in spec.get("properties", {}).items():
        path = f"{prefix}{name}"
        rows.append(
            f"| `{path}` | {_cell(_type(sub))} | {'yes' if name in required else 'no'} "
            f"| {_cell(sub.get('description', ''))} |"
        )
        if "properties" in sub:
            rows += _fields(sub, f"{path}.")
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            rows += _fields(items, f"{path}[].")
    return rows


def schema_section(name: str) -> str:
    """The fields of a JSON schema in ``processor/schemas`` as a table, then the schema itself."""
    path = SCHEMAS / f"{name}.schema.json"
    if not path.exists():
        log.warning("no schema %s", path)
        return f"(no schema {name})"
    text = path.read_text()
    spec = json.loads(text)
    header = ["| field | type | required | meaning |", "| --- | --- | --- | --- |"]
    lines = [
        f"**{spec.get('title', name)}**: {spec.get('description', '')}",
        "",
        *header,
        *_fields(spec),
        "",
        f'??? note "`processor/schemas/{name}.schema.json`"',
        "",
        "    ```json",
        *("    " + line if line else "" for line in text.splitlines()),
        "    ```",
    ]
    return "\n".join(lines)


def other_schemas(named: set[str]) -> list[Path]:
    """The schemas in ``processor/schemas`` that a page did not name, so a new one is shown without an edit."""
    return [
        path for path in sorted(SCHEMAS.glob("*.schema.json")) if path.name.removesuffix(".schema.json") not in named
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alert_section(name: str) -> str:
    """An alert rule as Prometheus runs it: severity, how long, expression, summary and description."""
    rules = {rule["alert"]: rule for rule in alert_rules()}
    rule = rules.get(name)
    if rule is None:
        log.warning("no alert %s in %s", name, ALERTS.name)
        return f"(no alert {name})"
    notes = rule.get("annotations", {})
    if notes.get("runbook_url") != runbook_url(name):
        log.warning("alert %s: runbook_url is %r, not %r", name, notes.get("runbook_url"), runbook_url(name))
    return "\n".join(
        [
            "| rule | as `deploy/prometheus/alerts.yml` has it |",
            "| --- | --- |",
            f"| severity | `{rule['labels']['severity']}` |",
            f"| fires after | {rule.get('for', '0m')} |",
            f"| summary | {_cell(notes.get('summary', ''))} |",
            f"| description | {_cell(notes.get('description', ''))} |",
            "",
            "```promql",
            str(rule["expr"]).strip(),
            "```",
        ]
    )


def alerts_table(src_uri: str) -> str:
    """Every alert rule with its severity, summary and a link to its runbook page."""
    base = posixpath.dirname(src_uri) or "."
    rows = ["| alert | severity | fires when |", "| --- | --- | --- |"]
    for rule in alert_rules():
        name = rule["alert"]
        link = posixpath.relpath(f"{RUNBOOKS}/{name}.md", base)
        summary = rule.get("annotations", {}).get("description", "")
        rows.append(f"| [`{name}`]({link}) | {rule['labels']['severity']} | {_cell(summary)} |")
    return "\n".join(rows)
