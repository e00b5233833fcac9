"""Fixtures: one fake chat service per test (see `vendors.py`), closed afterwards.

Other test packages reuse them by importing the fixture names, e.g. in `tests/delivery/conftest.py`:
`from tests.notify.conftest import dingtalk, wecom  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.vendors import (
    FakeDingTalk,
    FakeDiscord,
    FakeFeishu,
    FakeSlack,
    FakeTeams,
    FakeWebhook,
    FakeWeCom,
    closed_port_url,
)


@pytest.fixture
def wecom() -> Iterator[FakeWeCom]:
    with FakeWeCom() as server:
        yield server


@pytest.fixture
def dingtalk() -> Iterator[FakeDingTalk]:
    """A signed DingTalk robot (secret set, no keyword)."""
    with FakeDingTalk() as server:
        yield server


@pytest.fixture
def dingtalk_keyword() -> Iterator[FakeDingTalk]:
    """A DingTalk robot protected by the keyword 预警 instead of a signature."""
    with FakeDingTalk(secret=None, keyword="预警") as server:
        yield server


@pytest.fixture
def feishu() -> Iterator[FakeFeishu]:
    with FakeFeishu() as server:
        yield server


@pytest.fixture
def lark() -> Iterator[FakeFeishu]:
    with FakeFeishu(kind="lark", token="lark-hook-9c8b7a60") as server:
        yield server


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def teams() -> Iterator[FakeTeams]:
    with FakeTeams() as server:
        yield server


@pytest.fixture
def discord() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[FakeWebhook]:
    with FakeWebhook(hmac_secret="hmacSECRET-0123456789") as server:
        yield server


@pytest.fixture
def closed_url() -> str:
    """A URL where nothing listens (connection refused)."""
    return closed_port_url()
