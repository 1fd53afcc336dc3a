"""The SQL guard: one statement per call, nothing that writes from a read-only query.

A small lexer (`mask_sql`) blanks literals, quoted identifiers and comments so that keywords
and ';' are found only where ClickHouse would see them. The engine itself enforces
read-only access (`readonly=1` on the reader connection, see store.py); this guard refuses
what readonly=1 lets through in chDB (`INTO OUTFILE`) and what would confuse the client
(several statements, a second FORMAT clause).
"""

from __future__ import annotations

import re

from agents.errors import StoreError


def mask_sql(sql: str) -> str:
    """sql, same length, with literals and quoted identifiers filled with '~' and comments
    with spaces, so keywords and ';' can be looked for without being fooled by contents
    (and a trailing comment, unlike a trailing literal, strips away as whitespace)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            end = min(j + 1, n)
            out.append("~" * (end - i))  # not a word char: keeps \b working
            i = end
            continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            end = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
            continue
        out.append(" " * (end - i))
        i = end
    return "".join(out)


_mask_sql = mask_sql  # the old private name


def one_statement(sql: str, *, read_only: bool) -> str:
    """The one statement in sql, trailing ';' dropped, or StoreError.

    chDB executes every statement of a multi-statement string, and when one fails the
    connection keeps returning the leftovers to later queries; so never send more than one.
    `INTO OUTFILE` writes a file even under readonly=1 in chDB, so read-only queries refuse it.
    """
    body = mask_sql(sql).rstrip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    if not body.strip():
        raise StoreError("empty SQL statement")
    if ";" in body:
        raise StoreError("one SQL statement per call; found ';' between statements")
    # No keyword allow-list: readonly=1 is enforced by the engine (see Store), and
    # ClickHouse's own error for a typo is more useful than ours.
    if read_only and re.search(r"\bINTO\s+OUTFILE\b", body, re.IGNORECASE):
        raise StoreError("INTO OUTFILE is not allowed in a read-only query")
    # clickhouse-connect appends its own FORMAT; a second one is a syntax error that names
    # the client's format (`FORMAT Native`), not the user's, so say what to do instead.
    output_format = re.search(r"\bFORMAT\s+(\w+)\s*$", body, re.IGNORECASE)
    if output_format and output_format[1].upper() not in ("ASC", "DESC"):
        raise StoreError(f"drop 'FORMAT {output_format[1]}': reviewbus chooses the output "
                         "format (`reviewbus sql --format table|json`)")
    return sql[: len(body)]


def split_statements(text: str) -> list[str]:
    """Statements of a migration file: split on ';' at line ends, comment-only parts dropped."""
    parts = re.split(r";[ \t]*(?:\r?\n|$)", text)
    return [p.strip() for p in parts if mask_sql(p).strip()]
