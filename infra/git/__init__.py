"""Commits from a local git repository: `runner` (running git safely), `revisions` (which
commits a spec names), `commits` (a commit as a CommitEvent). infra.gitsource re-exports them."""
