"""The docs site builds with ``mkdocs build --strict`` (a broken link, a page missing from the nav, an alert
without a runbook page fail it), its references list every setting and command the code has, and the README
stays a landing page whose links lead somewhere."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from processor.dev.docs import alert_rules, resolved_cli, runbook_url
from processor.labelling.config import LabelConfig
from processor.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    result = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out


def _text(page: Path) -> str:
    body = re.sub(r"<script.*?</script>", " ", page.read_text(), flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_the_settings_reference_lists_every_setting(site: Path) -> None:
    text = _text(site / "reference" / "settings" / "index.html")
    names = [f"PROCESSOR_{name.upper()}" for name in Settings.model_fields]
    names += [f"PROCESSOR_LABEL_{name.upper()}" for name in LabelConfig.model_fields]
    missing = [name for name in names if name not in text]
    assert not missing, f"the settings reference lacks {missing}"


def _command_paths(group: click.Command, prefix: str) -> list[str]:
    paths = [prefix]
    if isinstance(group, click.Group):
        ctx = click.Context(group, info_name=prefix)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            paths += _command_paths(command, f"{prefix} {name}")
    return paths


def _heading(inner: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", inner)).replace("\N{PILCROW SIGN}", "").strip()


def test_the_commands_reference_lists_every_command(site: Path) -> None:
    page = (site / "reference" / "commands" / "index.html").read_text()
    headings = {_heading(h) for h in re.findall(r"<h\d[^>]*>(.*?)</h\d>", page)}
    missing = [path for path in _command_paths(resolved_cli(), "processor") if path not in headings]
    assert not missing, f"the commands reference lacks {missing}"
    assert "--max-in-flight" in page, "the worker's settings flags are not listed"


def test_every_alert_has_a_runbook_page_that_its_rule_links_to(site: Path) -> None:
    rules = alert_rules()
    assert len(rules) >= 7
    for rule in rules:
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == runbook_url(name)
        page = site / "operations" / "runbooks" / name / "index.html"
        assert page.is_file(), f"no runbook page built for {name}"
        assert str(rule["expr"]).split()[0].split("(")[0] in _text(page), f"{name}'s page does not show its rule"
    alerts = _text(site / "operations" / "alerts" / "index.html")
    assert all(rule["alert"] in alerts for rule in rules)


def test_the_nav_has_every_page_the_issue_asks_for() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    sections = {next(iter(entry)) for entry in config["nav"] if isinstance(entry, dict)}
    wanted = {"Getting started", "Architecture", "Operations", "Labelling", "The model", "Reference", "Changelog"}
    assert wanted <= sections, wanted - sections
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in ("labelling/labellers.md", "labelling/admins.md", "real-photos.md", "model/card.md", "changelog.md"):
        assert page in nav, page


def test_the_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README has {len(lines)} lines (at most {README_MAX_LINES})"
    first_commands = [line.split("#")[0].strip() for line in lines[:30] if line.startswith("make ")]
    assert first_commands[:2] == ["make demo", "make test"], first_commands
    assert "issue #" not in readme.lower(), "history belongs in CHANGELOG.md"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
