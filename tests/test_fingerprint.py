import hashlib
import re

from agents.fingerprint import fingerprint, normalize_line, normalize_path


def test_normalize_line_strips_and_collapses_whitespace():
    assert normalize_line("   x  =\t 1 \r\n") == "x = 1"
    assert normalize_line("") == ""
    assert normalize_line(" \t ") == ""


def test_normalize_path_agrees_on_spellings():
    assert normalize_path("./a//b/./c.py") == "a/b/c.py"
    assert normalize_path("a\\b.py") == "a/b.py"
    assert normalize_path("/a/b.py") == "a/b.py"


def test_fingerprint_is_sha256_of_rule_path_and_line_truncated_to_16_hex():
    fp = fingerprint("ruff:F401", "pkg/a.py", "import os")
    expected = hashlib.sha256(b"ruff:F401\0pkg/a.py\0import os").hexdigest()[:16]
    assert fp == expected
    assert re.fullmatch(r"[0-9a-f]{16}", fp)


def test_fingerprint_ignores_indentation_and_spacing_but_not_content():
    base = fingerprint("bandit:B602", "a.py", "subprocess.call(x, shell=True)")
    assert fingerprint("bandit:B602", "./a.py", "    subprocess.call(x,  shell=True)  ") == base
    assert fingerprint("bandit:B602", "a.py", "subprocess.call(y, shell=True)") != base
    assert fingerprint("bandit:B603", "a.py", "subprocess.call(x, shell=True)") != base
    assert fingerprint("bandit:B602", "b.py", "subprocess.call(x, shell=True)") != base


def test_fields_cannot_bleed_into_each_other():
    assert fingerprint("r", "ab.py", "c") != fingerprint("r", "a", "b.py c")
