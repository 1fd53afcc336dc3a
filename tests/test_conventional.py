from hypothesis import given
from hypothesis import strategies as st

from agents.conventional import LABEL_MAP, mask_message, mask_prefixes, parse_prefix


def test_label_map_covers_the_documented_types():
    assert LABEL_MAP == {
        "fix": "bug_fix", "feat": "feature", "refactor": "refactor", "style": "refactor",
        "docs": "docs", "test": "test", "tests": "test", "perf": "performance",
        "build": "build_ci", "ci": "build_ci", "chore": "chore", "deps": "chore",
        "revert": "revert",
    }


def test_plain_prefix():
    assert parse_prefix("fix: handle empty diff") == ("fix", "bug_fix", "handle empty diff")


def test_scope_and_breaking_bang():
    assert parse_prefix("feat(api)!: drop v1 endpoints") == (
        "feat", "feature", "drop v1 endpoints")
    assert parse_prefix("perf(db/query): batch inserts") == (
        "perf", "performance", "batch inserts")


def test_case_insensitive_and_raw_type_lowercased():
    assert parse_prefix("FIX: crash") == ("fix", "bug_fix", "crash")
    assert parse_prefix("Style: whitespace") == ("style", "refactor", "whitespace")
    assert parse_prefix("CI: cache pip") == ("ci", "build_ci", "cache pip")


def test_tests_and_test_both_map_to_test():
    assert parse_prefix("tests: cover router")[:2] == ("tests", "test")
    assert parse_prefix("test: cover router")[:2] == ("test", "test")


def test_body_is_kept():
    raw, label, rest = parse_prefix("docs: explain lanes\n\nLonger body\nsecond line")
    assert (raw, label) == ("docs", "docs")
    assert rest == "explain lanes\n\nLonger body\nsecond line"


def test_unknown_or_missing_type_is_unchanged():
    for msg in ("wip: something", "Merge branch 'main'", "update readme",
                "fixup! fix: x", "testing: nope", "Fix bug: in parser", ""):
        assert parse_prefix(msg) == (None, None, msg)


def test_git_revert_subject_is_not_a_label():
    msg = 'Revert "feat: add cache"\n\nThis reverts commit abc123.'
    assert parse_prefix(msg) == (None, None, msg)


def test_revert_prefix_is_a_label():
    assert parse_prefix("revert: feat: add cache") == ("revert", "revert", "feat: add cache")


def test_mask_prefixes_on_bullets_and_lines():
    text = (
        "squashed\n"
        "* fix: x\n"
        "- feat(api)!: y\n"
        "  + docs: z\n"
        "1. perf: faster\n"
        "chore(deps): bump\n"
        "keep fix: in the middle\n"
        "wip: unknown stays"
    )
    assert mask_prefixes(text) == (
        "squashed\n"
        "* x\n"
        "- y\n"
        "  + z\n"
        "1. faster\n"
        "bump\n"
        "keep fix: in the middle\n"
        "wip: unknown stays"
    )


def test_mask_prefixes_removes_stacked_prefixes():
    assert mask_prefixes("fix: feat(x): both") == "both"


def test_mask_message_masks_subject_and_body():
    msg = "feat(router): canary\n\n* fix: sticky hash\n* Test: add cases\n"
    assert mask_message(msg) == ("feat", "feature", "canary\n\n* sticky hash\n* add cases\n")


def test_mask_message_without_label_still_masks_body():
    msg = "Squash of several commits\n- fix: a\n- refactor: b"
    assert mask_message(msg) == (None, None, "Squash of several commits\n- a\n- b")


_types = st.sampled_from(sorted(LABEL_MAP))
_case = st.sampled_from([str.lower, str.upper, str.title])


@given(_types, _case, st.sampled_from(["", "(api)", "(a/b-c)"]), st.booleans(),
       st.text(alphabet="abcdefghij xyz.", min_size=1, max_size=40))
def test_masked_message_never_starts_a_line_with_a_mapped_prefix(t, case, scope, bang, desc):
    msg = f"{case(t)}{scope}{'!' if bang else ''}: {desc}\n- {t}: more\n"
    raw, label, masked = mask_message(msg)
    assert raw == t.lower()
    assert label == LABEL_MAP[t.lower()]
    for line in masked.splitlines():
        assert parse_prefix(line.lstrip("- "))[1] is None
