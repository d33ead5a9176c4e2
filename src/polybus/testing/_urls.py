"""URL rewriting for tests and the contract's knobs: options in the query, a password in the userinfo."""

from __future__ import annotations

import urllib.parse

__all__ = ["password_in_userinfo", "with_options"]


def with_options(url: str, /, **options: object) -> str:
    """``url`` with ``options`` added to its query, replacing options of the same name
    (``with_options(url, visibility_timeout=2, fifo=True)``; booleans are written lower case)."""
    if not options:
        return url
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()})
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


def password_in_userinfo(url: str, password: str) -> str | None:
    """``url`` with ``password`` as the password of its userinfo (user kept, else ``polybus``);
    ``None`` when the URL names no host (``memory://``)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    user = urllib.parse.quote(urllib.parse.unquote(parts.username or "polybus"), safe="")
    address = parts.netloc.rpartition("@")[2]
    secret = urllib.parse.quote(password, safe="")
    return parts._replace(netloc=f"{user}:{secret}@{address}").geturl()
