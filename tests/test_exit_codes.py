"""The one exit-code table: hotload --help and the README print the same rows."""

import re

from conftest import ROOT, run_hotload
from hotload.errors import EXIT_CODES


def test_readme_and_help_show_the_one_table():
    readme = (ROOT / "README.md").read_text()
    rows = dict((int(code), meaning) for code, meaning in re.findall(r"^\| (\d+) \| (.+?) \|$", readme, re.M))
    assert rows == dict(EXIT_CODES)
    help_text = run_hotload("--help", check=True).stdout
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s*{code}\s+{re.escape(meaning)}$", help_text, re.M), (code, help_text)
