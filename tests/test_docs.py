"""The operator's documentation keeps up with the code: every setting is in the configuration
table (docs/configuration.md), and the operations and audit guides exist and name the commands they teach."""

import re
from pathlib import Path

import msgspec

from memory.server.config import env_var
from memory.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]


def _configuration_table() -> str:
    page = (ROOT / "docs" / "configuration.md").read_text()
    return "\n".join(line for line in page.splitlines() if line.startswith("|"))


def test_every_setting_is_in_the_configuration_table_with_its_variable():
    table = _configuration_table()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| `(\w+)` \|", table, re.M)}
    fields = [f.name for f in msgspec.structs.fields(ServerSettings)]
    assert sorted(rows) == sorted(fields)
    assert all(rows[name] == env_var(name) for name in fields)


def test_the_operations_and_audit_guides_name_the_commands_they_teach():
    operations = (ROOT / "docs" / "operations.md").read_text()
    audit = (ROOT / "docs" / "audit.md").read_text()
    for command in ("memory backup", "memory restore", "memory rotate-key", "memory replay", "/metrics",
                    "memory config show"):
        assert command in operations, command
    for command in ("verify_export.py", "--expect-jwks", "memory verify-export", "jwks.json"):
        assert command in audit, command
