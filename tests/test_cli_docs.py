"""docs/cli.md matches what docs/gen_cli.py generates from the current command tree."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_generator() -> ModuleType:
    path = REPO_ROOT / "docs" / "gen_cli.py"
    spec = importlib.util.spec_from_file_location("tierwise_gen_cli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    generator = load_generator()
    expected = generator.render(generator.load_root_command())
    committed = (REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == expected, "docs/cli.md is out of date; run: python docs/gen_cli.py"


def test_cli_reference_covers_every_command() -> None:
    generator = load_generator()
    root = generator.load_root_command()
    paths = [
        context.command_path
        for _, context in generator.walk(root, root.context_class(root, info_name="tierwise"))
    ]
    text = generator.render(root)
    assert "tierwise serve" in paths
    assert "tierwise policy explain" in paths
    for path in paths:
        assert f"`{path}`" in text
    assert "| `--port <int>` | TCP port to listen on. [env var: TIERWISE_PORT; default: 8080] |" in text


def settings_table(text: str) -> str:
    section = text.split("## Gateway settings", 1)
    assert len(section) == 2, "docs/cli.md has no 'Gateway settings' section"
    return section[1]


def test_settings_table_lists_every_field() -> None:
    from router.settings import Settings

    table = settings_table(load_generator().render_settings())
    for name in Settings.model_fields:
        assert f"`TIERWISE_{name.upper()}`" in table, f"setting {name} is missing from docs/cli.md"


def test_settings_table_lists_every_variable_read() -> None:
    # Every TIERWISE_* name in the gateway's code must be a setting in the table, so that a
    # variable read with os.environ outside the Settings class cannot go undocumented.
    table = settings_table(load_generator().render_settings())
    pattern = re.compile(r"\bTIERWISE_[A-Z][A-Z0-9_]*\b")
    named: dict[str, Path] = {}
    for path in sorted((REPO_ROOT / "router").rglob("*.py")):
        for variable in pattern.findall(path.read_text(encoding="utf-8")):
            named.setdefault(variable, path)
    assert "TIERWISE_MODEL_DIR" in named
    for variable, path in sorted(named.items()):
        assert f"`{variable}`" in table, f"{variable}, named in {path}, is missing from docs/cli.md"
