"""What `sentinel check` prints of a configuration that loaded: counts, names, and addresses with their
passwords and tokens taken out (the output goes to terminals and CI logs)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sentinel.config.settings import Config
from sentinel.units import format_duration


def summary(cfg: Config) -> str:
    """The few lines `sentinel check` prints on success."""
    kinds: dict[str, int] = {}
    for r in cfg.rules:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    rules = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    lines = [
        f"rules: {len(cfg.rules)} ({rules}): {', '.join(r.name for r in cfg.rules)}",
        f"receivers: {len(cfg.receivers)}: {', '.join(f'{r.name} ({r.kind})' for r in cfg.receivers)}",
        f"routes: {len(cfg.routes)}, inhibit rules: {len(cfg.inhibit)}",
        f"timezone: {cfg.timezone}, listen: {cfg.listen}, notify: {'on' if cfg.notify else 'off (dry run)'}",
    ]
    if cfg.source is not None:
        what = f"table {cfg.source.table}" if cfg.source.table else "custom query"
        lines.append(
            f"source: {redact_url(cfg.source.url.get())} ({what}), poll every "
            f"{format_duration(cfg.source.poll_interval)}, lateness {format_duration(cfg.source.lateness)}"
        )
    if cfg.state_url is not None:
        lines.append(f"state: {redact_url(cfg.state_url.get())}")
    return "\n".join(lines)


def redact_url(url: str) -> str:
    """A database or webhook URL with its password, query string and path tokens removed."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    if parts.scheme.startswith(("http", "https")):
        return f"{parts.scheme}://{netloc}/…"
    path = parts.path
    return f"{parts.scheme}://{netloc}{path}"
