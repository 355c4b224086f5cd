"""The README's configuration table names exactly the CROWDPULSE_* variables crowdpulse reads
(the settings, Kafka security, the publish edge's secret): a new setting without a row, or a row
for a setting that is gone, fails here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Where the variables are read.
SOURCES = ("streams/core/settings.py", "streams/core/kafka_security.py", "streams/tools/publish.py", "streams/runtime/services.py")
VARIABLE = re.compile(r"CROWDPULSE_[A-Z0-9_]*[A-Z0-9]")


def read_by_code() -> set[str]:
    return {v for path in SOURCES for v in VARIABLE.findall((REPO / path).read_text())}


def in_readme_table() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Configuration"):]
    table = table[: table.index("\n\n", table.index("| variable |"))]
    return {v for line in table.splitlines() if line.startswith("| `") for v in VARIABLE.findall(line.split(" | ")[0])}


def test_the_configuration_table_and_the_code_name_the_same_variables() -> None:
    code, readme = read_by_code(), in_readme_table()
    assert code - readme == set(), f"read by crowdpulse but not in the README's table: {sorted(code - readme)}"
    assert readme - code == set(), f"in the README's table but read nowhere: {sorted(readme - code)}"
