"""infra.gitsource against a fixture repository built with real git commands."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.errors import ReviewbusError
from agents.settings import Limits
from infra.gitsource import (
    GitError,
    NotAGitRepository,
    UnknownRevision,
    _name_from_url,
    commit_event,
    commit_events,
    repo_name_for,
    resolve_revisions,
)
from schemas import CommitEvent

try:
    from tests.gitrepo import (
        FIX_BODY,
        HELPERS,
        MAIN_KEYS,
        PARSER_V2,
        RUNNER_V1,
        SUBJECTS,
        git,
        make_repo,
        shas_by_key,
    )
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from gitrepo import (  # type: ignore[no-redef]
        FIX_BODY,
        HELPERS,
        MAIN_KEYS,
        PARSER_V2,
        RUNNER_V1,
        SUBJECTS,
        git,
        make_repo,
        shas_by_key,
    )

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("fixture") / "demo")


@pytest.fixture(scope="module")
def sha(repo: Path) -> dict[str, str]:
    return shas_by_key(repo)


def files_by_path(event: CommitEvent) -> dict:
    return {f.path: f for f in event.files}


# --- resolve_revisions --------------------------------------------------------------------


def test_fixture_history_is_deterministic(tmp_path: Path, sha: dict[str, str]) -> None:
    again = shas_by_key(make_repo(tmp_path / "again"))
    assert again == sha


def test_single_revisions(repo: Path, sha: dict[str, str]) -> None:
    assert resolve_revisions(repo, "HEAD") == [sha["after_merge"]]
    assert resolve_revisions(repo, sha["fix"]) == [sha["fix"]]
    assert resolve_revisions(repo, sha["fix"][:10]) == [sha["fix"]]
    assert resolve_revisions(repo, "HEAD~2") == [sha["delete"]]  # HEAD~1 is the merge
    assert resolve_revisions(repo, "main") == [sha["after_merge"]]
    assert resolve_revisions(repo, None) == [sha["after_merge"]]


def test_range_is_oldest_first_first_parent_without_merges(
        repo: Path, sha: dict[str, str]) -> None:
    assert resolve_revisions(repo, f"{sha['fix']}..{sha['big']}") == [
        sha[k] for k in ("docs", "test", "binary", "rename", "big")]
    whole = resolve_revisions(repo, f"{sha['initial']}..HEAD")
    assert whole == [sha[k] for k in MAIN_KEYS[1:]]
    assert sha["merge"] not in whole and sha["side"] not in whole
    assert resolve_revisions(repo, f"{sha['delete']}..") == [sha["after_merge"]]
    assert resolve_revisions(repo, "HEAD~2..HEAD") == [sha["after_merge"]]
    assert resolve_revisions(repo, "HEAD..HEAD") == []
    assert resolve_revisions(repo, f"{sha['initial']}..HEAD", last=2) == [
        sha["delete"], sha["after_merge"]]


def test_last_n(repo: Path, sha: dict[str, str]) -> None:
    assert resolve_revisions(repo, None, last=3) == [sha["big"], sha["delete"],
                                                    sha["after_merge"]]
    assert resolve_revisions(repo, None, last=1) == [sha["after_merge"]]
    everything = resolve_revisions(repo, None, last=500)
    assert everything == [sha[k] for k in MAIN_KEYS]
    assert resolve_revisions(repo, "HEAD~2", last=2) == [sha["big"], sha["delete"]]


def test_unknown_revisions(repo: Path, sha: dict[str, str]) -> None:
    with pytest.raises(UnknownRevision, match=r"^unknown revision: nope$"):
        resolve_revisions(repo, "nope")
    with pytest.raises(UnknownRevision, match="unknown revision: nope"):
        resolve_revisions(repo, f"{sha['fix']}..nope")
    with pytest.raises(UnknownRevision, match="unknown revision"):
        resolve_revisions(repo, "HEAD~99")
    with pytest.raises(UnknownRevision):
        resolve_revisions(repo, "--all")  # never passed to git as an option
    with pytest.raises(UnknownRevision):
        commit_event(repo, "deadbeef" * 5)
    with pytest.raises(GitError, match="last"):
        resolve_revisions(repo, None, last=0)


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepository, match=r"^not a git repository: .*plain$"):
        resolve_revisions(plain, "HEAD")
    with pytest.raises(NotAGitRepository, match="not a git repository"):
        commit_event(tmp_path / "missing", "HEAD")
    assert issubclass(NotAGitRepository, ReviewbusError)


def test_empty_repository(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(UnknownRevision, match="no commits"):
        resolve_revisions(empty, None, last=5)


def test_ignores_git_environment_of_the_caller(
        repo: Path, sha: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'diff.noprefix'='true'")
    assert resolve_revisions(repo, "HEAD") == [sha["after_merge"]]
    assert "diff --git a/app/runner.py b/app/runner.py" in commit_event(repo, "HEAD").diff


# --- commit_event -------------------------------------------------------------------------


def test_event_fields(repo: Path, sha: dict[str, str]) -> None:
    ev = commit_event(repo, sha["fix"], pull_request=7)
    assert ev.sha == sha["fix"]
    assert ev.message == f"{SUBJECTS['fix']}\n\n{FIX_BODY}"
    assert ev.author == "Ada Reviewer <ada@example.com>"
    assert ev.authored_at == datetime(2024, 1, 3, 12, tzinfo=UTC)  # the fixture's author date
    assert ev.branch == "main"
    assert ev.repo == "demo"
    assert ev.pull_request == 7
    assert re.fullmatch(r"[0-9a-f]{32}", ev.event_id)
    assert "diff --git a/app/parser.py b/app/parser.py" in ev.diff
    assert "+    if not lines:" in ev.diff
    assert not ev.diff_truncated
    (f,) = ev.files
    assert (f.path, f.status, f.content, f.content_truncated) == (
        "app/parser.py", "modified", PARSER_V2, False)
    assert f.added and f.deleted
    # Round-trips through JSON as it would on the bus.
    assert CommitEvent.model_validate_json(ev.model_dump_json()) == ev
    assert commit_event(repo, "HEAD~2").sha == sha["delete"]
    assert commit_event(repo, sha["fix"], repo_name="acme/demo").repo == "acme/demo"


def test_added_python_file_with_issues(repo: Path, sha: dict[str, str]) -> None:
    ev = commit_event(repo, sha["runner"])
    f = files_by_path(ev)["app/runner.py"]
    assert (f.status, f.added, f.deleted, f.content) == ("added", 8, 0, RUNNER_V1)
    assert "+    return subprocess.call(cmd, shell=True)" in ev.diff
    assert ev.message.startswith("feat(cli): add command runner\n\n")


def test_initial_commit_adds_everything(repo: Path, sha: dict[str, str]) -> None:
    files = files_by_path(commit_event(repo, sha["initial"]))
    assert set(files) == {"README.md", "app/__init__.py", "app/parser.py", "app/helpers.py",
                          "scripts/old.sh"}
    assert all(f.status == "added" for f in files.values())
    assert files["app/__init__.py"].content == ""


def test_binary_file(repo: Path, sha: dict[str, str]) -> None:
    ev = commit_event(repo, sha["binary"])
    (f,) = ev.files
    assert (f.path, f.status, f.added, f.deleted, f.content, f.content_truncated) == (
        "assets/logo.png", "added", None, None, None, False)
    assert "Binary files" in ev.diff


def test_big_file_over_limit(repo: Path, sha: dict[str, str]) -> None:
    limits = Limits()
    ev = commit_event(repo, sha["big"], limits=limits)
    (f,) = ev.files
    assert (f.path, f.status, f.content, f.content_truncated) == (
        "data/big.txt", "added", None, True)
    assert f.added and f.added > 4000
    assert ev.diff_truncated
    assert len(ev.diff) <= limits.max_diff_chars and ev.diff.endswith("\n")
    assert ev.diff.startswith("diff --git a/data/big.txt b/data/big.txt\n")


def test_rename_and_delete(repo: Path, sha: dict[str, str]) -> None:
    (f,) = commit_event(repo, sha["rename"]).files
    assert (f.path, f.status, f.added, f.deleted, f.content) == (
        "app/utils.py", "renamed", 0, 0, HELPERS)
    ev = commit_event(repo, sha["delete"])
    (f,) = ev.files
    assert (f.path, f.status, f.content, f.content_truncated) == (
        "scripts/old.sh", "deleted", None, False)
    assert "deleted file mode" in ev.diff


def test_non_ascii_path_is_not_quoted(repo: Path, sha: dict[str, str]) -> None:
    ev = commit_event(repo, sha["docs"])
    files = files_by_path(ev)
    assert files["docs/guide ü.md"].status == "added"
    assert "guide ü.md" in ev.diff
    assert files["README.md"].status == "modified"


def test_merge_commit_diff_is_against_first_parent(repo: Path, sha: dict[str, str]) -> None:
    ev = commit_event(repo, sha["merge"])
    assert [f.path for f in ev.files] == ["app/retry.py"]
    assert "except:" in (ev.files[0].content or "")


def test_diff_truncated_at_line_end(repo: Path, sha: dict[str, str]) -> None:
    full = commit_event(repo, sha["initial"]).diff
    ev = commit_event(repo, sha["initial"], limits=Limits(max_diff_chars=200))
    assert ev.diff_truncated
    assert 0 < len(ev.diff) <= 200
    assert ev.diff.endswith("\n") and full.startswith(ev.diff)
    exact = commit_event(repo, sha["initial"], limits=Limits(max_diff_chars=len(full)))
    assert exact.diff == full and not exact.diff_truncated


def test_content_limits(repo: Path, sha: dict[str, str]) -> None:
    files = files_by_path(commit_event(repo, sha["initial"], limits=Limits(max_file_bytes=100)))
    assert files["app/helpers.py"].content is None
    assert files["app/helpers.py"].content_truncated
    assert files["README.md"].content == "# demo\n\nA small demo project.\n"

    limits = Limits(max_total_content_bytes=600)
    files = files_by_path(commit_event(repo, sha["initial"], limits=limits))
    total = sum(len(f.content.encode()) for f in files.values() if f.content is not None)
    assert total <= 600
    assert any(f.content_truncated and f.content is None for f in files.values())

    ev = commit_event(repo, sha["initial"], limits=Limits(max_files=2))
    assert len(ev.files) == 2


def test_commit_events(repo: Path, sha: dict[str, str]) -> None:
    events = commit_events(repo, f"{sha['fix']}..{sha['test']}", pull_request=3)
    assert [e.sha for e in events] == [sha["docs"], sha["test"]]
    assert {e.pull_request for e in events} == {3}
    assert len({e.event_id for e in events}) == 2
    assert json.loads(events[0].model_dump_json())["repo"] == "demo"
    assert [e.sha for e in commit_events(repo, None, last=2)] == [sha["delete"],
                                                                  sha["after_merge"]]


def test_detached_head_and_origin_name(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    git(small, "init", "-q", "-b", "main")
    (small / "a.txt").write_text("a\n")
    git(small, "add", "a.txt")
    git(small, "commit", "-q", "-m", "chore: a")
    git(small, "remote", "add", "origin", "https://bot:s3cret@github.com/acme/widgets.git")
    assert repo_name_for(small) == "acme/widgets"
    ev = commit_event(small, "HEAD")
    assert ev.repo == "acme/widgets" and "s3cret" not in ev.model_dump_json()
    assert ev.branch == "main"
    git(small, "checkout", "-q", "--detach")
    assert commit_event(small, "HEAD").branch is None


@pytest.mark.parametrize(("url", "name"), [
    ("git@github.com:acme/widgets.git", "acme/widgets"),
    ("https://github.com/acme/widgets", "acme/widgets"),
    ("https://github.com/acme/widgets.git/", "acme/widgets"),
    ("ssh://git@gitlab.example.com:2222/group/sub/proj.git", "sub/proj"),
    ("https://user:token@example.com/a/b.git", "a/b"),
    ("/srv/git/project.git", "git/project"),
    ("file:///srv/git/project.git", "git/project"),
    ("C:\\repos\\proj", "repos/proj"),
    ("https://example.com/", ""),
])
def test_name_from_url(url: str, name: str) -> None:
    assert _name_from_url(url) == name
