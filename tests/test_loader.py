"""The loader above the configuration: what the notifiers require of a file is reported with the file's
own problems (`FILE: KEY: REASON`, exit 2 from `sentinel check`), while `sentinel.config` alone judges
only what it knows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.config import load_config
from sentinel.loader import ConfigError, load

FIXTURE = Path(__file__).parent / "fixtures" / "design-example.toml"
SECRETS = {
    "ALERT_API_TOKEN": "tok-SECRET-1",
    "ALERT_ACK_SECRET": "ack-SECRET-2",
    "WECOM_ROBOT_1": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-SECRET-3",
    "WECOM_ROBOT_2": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-SECRET-4",
    "DINGTALK_WEBHOOK_URL": "https://oapi.dingtalk.com/robot/send?access_token=TOKEN-SECRET-5",
    "DINGTALK_SECRET": "SEC-SECRET-6",
}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("SENTINEL_"):
            monkeypatch.delenv(k)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)


def config_with(tmp_path: Path, top: str = "", tail: str = "") -> Path:
    """The design's example with top-level keys before it and tables after it."""
    p = tmp_path / "sentinel.toml"
    p.write_text(top + FIXTURE.read_text(encoding="utf-8") + "\n" + tail, encoding="utf-8")
    return p


def broken_templates(tmp_path: Path) -> Path:
    d = tmp_path / "templates"
    (d / "zh_CN").mkdir(parents=True)
    (d / "zh_CN" / "alert.j2").write_text("ok\n{% if %}\n", encoding="utf-8")
    return d


def test_a_broken_template_override_is_a_problem_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = config_with(tmp_path, f'templates_dir = "{broken_templates(tmp_path)}"\n')
    assert load_config(p).templates_dir is not None  # the configuration alone does not render templates
    with pytest.raises(ConfigError) as err:
        load(p)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(f"{p}: templates_dir: ")
    assert "alert.j2" in err.value.problems[0]
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    out = capsys.readouterr().err
    assert f"{p}: templates_dir: " in out and "Traceback" not in out


def test_a_good_override_loads(tmp_path: Path) -> None:
    d = tmp_path / "templates"
    (d / "zh_CN").mkdir(parents=True)
    (d / "zh_CN" / "alert.j2").write_text("自定义：{{ bold(a.rule) }} {{ series(a) }}\n", encoding="utf-8")
    assert load(config_with(tmp_path, f'templates_dir = "{d}"\n')).templates_dir == d


RECEIVER = '\n[[receivers]]\nname = "extra"\nkind = "{kind}"\nurl = "https://chat.example/hook"\n{keys}\n'


@pytest.mark.parametrize(
    ("kind", "keys", "problem"),
    [
        ("wecom", 'secret = "s"', "`secret` (robot signing) applies to dingtalk, feishu and lark, not wecom"),
        ("slack", 'keyword = "预警"', "`keyword` applies to dingtalk, feishu and lark, not slack"),
        ("teams", 'hmac_secret = "h"', "`hmac_secret` applies to webhook, not teams"),
        (
            "feishu",
            'mention = { severe = { mobiles = ["13800000000"] } }',
            "mention.severe.mobiles: only wecom and dingtalk mention by mobile",
        ),
    ],
)
def test_a_key_the_chat_tool_does_not_take_names_the_tools_that_do(
    tmp_path: Path, kind: str, keys: str, problem: str
) -> None:
    p = config_with(tmp_path, tail=RECEIVER.format(kind=kind, keys=keys))
    assert load_config(p).receivers[-1].kind == kind  # the configuration alone knows no chat tool
    with pytest.raises(ConfigError) as err:
        load(p)
    assert err.value.problems == [f"{p}: receivers[2]: {problem}"]


@pytest.mark.parametrize(
    ("kind", "keys"),
    [
        ("dingtalk", 'secret = "s"\nkeyword = "预警"\nmention = { severe = { mobiles = ["13800000000"] } }'),
        ("feishu", 'secret = "s"\nkeyword = "预警"'),
        ("lark", 'secret = "s"'),
        ("wecom", 'mention = { severe = { mobiles = ["13800000000"], all = true } }'),
        ("webhook", 'hmac_secret = "h"'),
    ],
)
def test_the_keys_each_chat_tool_takes_load(tmp_path: Path, kind: str, keys: str) -> None:
    assert load(config_with(tmp_path, tail=RECEIVER.format(kind=kind, keys=keys))).receivers[-1].kind == kind


def test_every_problem_of_a_file_is_told_at_once(tmp_path: Path) -> None:
    p = config_with(
        tmp_path,
        f'templates_dir = "{broken_templates(tmp_path)}"\n',
        RECEIVER.format(kind="slack", keys='secret = "s"') + '\n[[routes]]\nreceivers = ["nobody"]\n',
    )
    with pytest.raises(ConfigError) as err:
        load(p)
    keys = {line.removeprefix(f"{p}: ").split(":")[0] for line in err.value.problems}
    assert {"receivers[2]", "templates_dir"} <= keys and any(k.startswith("routes[") for k in keys)


def test_the_commands_that_never_send_skip_the_chat_tools_checks(tmp_path: Path) -> None:
    """`status`, `ack`, `silence` and `backtest` build no receiver and render no template: what only the chat
    tools refuse does not stop them, and they start without importing the chat tools."""
    p = config_with(
        tmp_path,
        f'templates_dir = "{broken_templates(tmp_path)}"\n',
        RECEIVER.format(kind="slack", keys='secret = "s"'),
    )
    with pytest.raises(ConfigError):
        load(p)
    assert load(p, receiver_secrets=False).receivers[-1].kind == "slack"
    probe = (
        "import sys; from sentinel.loader import load; "
        f"load({str(p)!r}, receiver_secrets=False); print(sorted(m for m in sys.modules if m.startswith("
        "('sentinel.notify', 'jinja2'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={**os.environ, **SECRETS}
    )
    assert out.stdout.strip() == "[]", out.stderr
