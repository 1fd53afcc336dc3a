"""DSNs and the secrets in them: which engine a DSN names, and text safe to show."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr


def chdb_path(dsn: str) -> str | None:
    """The data directory of a chdb:// DSN, or None for an in-memory engine."""
    parts = urlsplit(dsn)
    location = parts.netloc.rpartition("@")[2] if parts.netloc else parts.path
    return None if location in ("", "memory", ":memory:") else location


def redact_dsn(dsn: str) -> str:
    """The DSN with any password in it replaced by ***."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def dsn_password(dsn: str) -> SecretStr | None:
    """The password written into a DSN, if any."""
    password = urlsplit(dsn).password
    return SecretStr(password) if password else None


def scrub(text: str, secret: SecretStr | None) -> str:
    """text with the secret's value replaced by ***."""
    value = secret.get_secret_value() if secret is not None else ""
    return text.replace(value, "***") if value else text


def one_line(text: object) -> str:
    return " ".join(str(text).split())
