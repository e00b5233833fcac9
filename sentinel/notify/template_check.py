"""A `templates_dir` override checked before it is used (config reload, `sentinel check`): every file
compiles, and every message shape renders in every syntax and locale folder it provides, from sample
alerts of each kind (a threshold surge, a streak resolved, a quiet channel, and their digest). The same
sample surge is what `sentinel notify-test` sends, so an operator sees the alert their override will.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import jinja2

from sentinel.model import Tier
from sentinel.notify.base import Syntax
from sentinel.notify.render import LOCALES, TEMPLATES, TemplateError, environment, render
from sentinel.notify.views import AlertView


def sample_view(now: datetime, tier: Tier = Tier.MODERATE, ack_url: str | None = None) -> AlertView:
    """The alert `sentinel notify-test` sends (with kind="test") and `check_templates` renders."""
    return AlertView(
        rule="type-surge",
        kind="threshold",
        state="firing",
        tier=tier,
        labels={"type": "物流配送延误", "channel": "电话热线"},
        value=151.0,
        baseline=100.0,
        ratio=1.51,
        started=now - timedelta(minutes=12),
        at=now,
        instance="sample",
        fingerprint="sample",
        p=2.1e-06,
        mode="day",
        samples=(("10231", None), ("10232", None)),
        ack_url=ack_url,
        projected=302.0,
    )


def check_templates(templates_dir: Path, status_url: str = "http://127.0.0.1:9732/") -> None:
    """Reject a broken override before it is used (config reload, `sentinel check`).

    Compiles every file under `templates_dir`, then renders each message shape in each syntax and
    each locale folder it provides, so an undefined name in a branch that samples reach is caught too.
    Raises `TemplateError` naming the file.
    """
    if not templates_dir.is_dir():
        raise TemplateError(f"templates_dir {templates_dir} is not a directory")
    env = environment(Syntax.TEXT, templates_dir)
    for path in sorted(p for p in templates_dir.rglob("*") if p.is_file()):
        name = path.relative_to(templates_dir).as_posix()
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.filename or path}, line {exc.lineno}: {exc.message}") from exc
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{path}: not UTF-8 ({exc.reason})") from exc
    now = datetime.now().astimezone()
    firing = sample_view(now, Tier.SEVERE, ack_url=status_url)
    resolved = AlertView(
        rule="same-type-streak",
        kind="streak",
        state="resolved",
        tier=Tier.LIGHT,
        labels={"type": "服务态度"},
        value=5,
        baseline=None,
        ratio=None,
        started=now - timedelta(hours=2),
        at=now,
        instance="s2",
        fingerprint="s2",
        length=5,
        chance=3e-4,
        expected_per_day=0.03,
        peak=6,
        duration_s=7200,
        reason="hold expired",
    )
    quiet = AlertView(
        rule="channel-quiet",
        kind="quiet",
        state="firing",
        tier=Tier.MODERATE,
        labels={"channel": "微信公众号"},
        value=0,
        baseline=9.4,
        ratio=None,
        started=now - timedelta(hours=2),
        at=now - timedelta(hours=2),
        instance="s3",
        fingerprint="s3",
        p=8.3e-05,
        expected=9.4,
        silent_s=10800,
        handover=True,
        open_s=7200,
    )
    locales = {p.name for p in templates_dir.iterdir() if any((p / n).is_file() for n in TEMPLATES)} or set(LOCALES)
    for loc in sorted(locales):
        for syntax in Syntax:
            for kind in ("alert", "repeat", "escalation", "test"):
                for views in ([firing], [resolved], [quiet], [firing, resolved, quiet]):
                    render(
                        views,
                        syntax=syntax,
                        locale=loc,
                        max_bytes=4096,
                        status_url=status_url,
                        kind=kind,
                        note="note",
                        templates_dir=templates_dir,
                    )
