"""`sentinel demo`, the README's first command: with nothing configured it detects the surge and the
streak within seconds and delivers both through the real outbox to the local chat sink."""

from __future__ import annotations

import io
import re

import pytest

from sentinel.demo import run_demo


@pytest.mark.slow
def test_demo_detects_the_surge_and_the_streak_and_delivers_them() -> None:
    out = io.StringIO()
    assert run_demo(30, out=out) == 0
    text = out.getvalue()
    assert "seeded" in text and "/metrics" in text
    panels = text.split("企业微信群机器人")
    streak = [p for p in panels if "服务态度" in p and "连续 5" in p]
    surge = [p for p in panels if "物流配送延误" in p and "type-surge" in p]
    assert streak, text[-3000:]
    assert surge, text[-3000:]
    delivered = int(re.search(r"(\d+) message\(s\) delivered", text).group(1))  # type: ignore[union-attr]
    assert delivered >= 2
