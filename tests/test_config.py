"""Configuration: the design's example loads; every class of error names file and key and exits 2;
secrets never show."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.config import ConfigError, Secret, StreakRuleConfig, ThresholdRuleConfig, load_config
from sentinel.units import parse_duration, parse_rate, parse_window

FIXTURE = Path(__file__).parent / "fixtures" / "design-example.toml"
SECRETS = {
    "ALERT_API_TOKEN": "tok-SECRET-1",
    "ALERT_ACK_SECRET": "ack-SECRET-2",
    "WECOM_ROBOT_1": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-SECRET-3",
    "WECOM_ROBOT_2": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-SECRET-4",
    "DINGTALK_WEBHOOK_URL": "https://oapi.dingtalk.com/robot/send?access_token=TOKEN-SECRET-5",
    "DINGTALK_SECRET": "SEC-SECRET-6",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k in list(os.environ):
        if k.startswith("SENTINEL_"):
            monkeypatch.delenv(k)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    return SECRETS


def write(tmp_path: Path, text: str, name: str = "sentinel.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def base(extra: str = "") -> str:
    return FIXTURE.read_text(encoding="utf-8") + "\n" + extra


def test_design_example_loads(env: dict[str, str]) -> None:
    cfg = load_config(FIXTURE)
    assert cfg.timezone == "Asia/Shanghai"
    assert [r.name for r in cfg.rules] == ["type-surge", "type-channel-surge", "same-type-streak"]
    surge = cfg.rules[0]
    assert isinstance(surge, ThresholdRuleConfig)
    assert surge.max_p == 1e-4 and surge.tiers.moderate == 2.0 and surge.where_not.channel == ["内部录入"]
    streak = cfg.rules[2]
    assert isinstance(streak, StreakRuleConfig)
    assert streak.distinct == "customer" and streak.hold.total_seconds() == 3600
    assert cfg.source is not None and cfg.source.lateness.total_seconds() == 300
    assert cfg.receivers[0].urls is not None and cfg.receivers[0].urls[0].get() == SECRETS["WECOM_ROBOT_1"]
    assert cfg.receivers[0].rate_limit is not None and cfg.receivers[0].rate_limit.count == 20
    assert cfg.routes[0].continue_ is False and cfg.routes[0].mute[0].start.hour == 22
    assert cfg.inhibit[0].equal == ["type"]


def test_check_command_ok(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "type-surge" in out and "cs-team (wecom)" in out
    for secret in SECRETS.values():
        assert secret not in out


def test_secrets_never_printed(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(FIXTURE)
    text = repr(cfg) + str(cfg) + repr(cfg.model_dump()) + cfg.model_dump_json()
    logging.getLogger("t").warning("config %r", cfg)
    text += caplog.text
    for secret in SECRETS.values():
        assert secret not in text
    assert "********" in text


def test_secret_file_and_credentials_directory(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "token").write_text("from-credentials\n")
    abs_file = tmp_path / "ack"
    abs_file.write_text("from-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    p = write(tmp_path, f'[api]\ntoken = "secret-file:token"\nack_secret = "secret-file:{abs_file}"\n')
    cfg = load_config(p)
    assert cfg.api.token == Secret("from-credentials")
    assert cfg.api.ack_secret is not None and cfg.api.ack_secret.get() == "from-file"


def test_missing_secret_file_names_key(env: dict[str, str], tmp_path: Path) -> None:
    p = write(tmp_path, '[api]\ntoken = "secret-file:/nonexistent/x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "api.token" in str(err.value) and "cannot read secret file" in str(err.value)


def test_environment_overrides(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_SOURCE__POLL_INTERVAL", "5s")
    monkeypatch.setenv("SENTINEL_TIMEZONE", "UTC")
    monkeypatch.setenv("SENTINEL_API__ACK_TTL", "1d")
    cfg = load_config(FIXTURE)
    assert cfg.source is not None and cfg.source.poll_interval.total_seconds() == 5
    assert cfg.source.table == "complaints"  # the rest of [source] still comes from the file
    assert cfg.timezone == "UTC" and cfg.api.ack_ttl.days == 1


def test_environment_error_names_variable(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_SOURCE__LATENESS", "soon")
    with pytest.raises(ConfigError) as err:
        load_config(FIXTURE)
    assert "source.lateness" in str(err.value) and "SENTINEL_SOURCE__LATENESS" in str(err.value)


@pytest.mark.parametrize(
    ("var", "key", "reason"),
    [
        ("SENTINEL_BOGUS", "bogus", "unknown key"),
        ("sentinel_pol_interval", "pol_interval", "unknown key"),  # names are not case-sensitive
        (
            "SENTINEL_TIMEZONE__NAME",
            "timezone.name",
            "unknown key: timezone is a single value, set as SENTINEL_TIMEZONE",
        ),
        (
            "SENTINEL_SOURCE__POLL_INTERVALL",
            "source.poll_intervall",  # nested: as in the file
            "unknown key; did you mean 'poll_interval'?",
        ),
    ],
)
def test_unknown_environment_override_is_reported(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, var: str, key: str, reason: str
) -> None:
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError) as err:
        load_config(FIXTURE)
    assert err.value.problems == [f"{FIXTURE}: {key}: {reason} (set by {var})"]


def test_test_suite_variables_are_not_configuration(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_PG_HOST", "127.0.0.1")  # read by tests/conftest.py, not by the daemon
    assert load_config(FIXTURE).timezone == "Asia/Shanghai"


@pytest.mark.parametrize("command", ["check", "run"])
def test_unknown_environment_override_stops_check_and_run(env: dict[str, str], command: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_") or k.startswith("SENTINEL_TEST_")}
    out = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", command, "--config", str(FIXTURE)],
        capture_output=True,
        text=True,
        env={**clean, "SENTINEL_BOGUS": "1"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr == f"error: {FIXTURE}: bogus: unknown key (set by SENTINEL_BOGUS)\n"


ERRORS = [
    # (snippet appended or replacing, expected key path, expected words)
    ("bogus = 1\n", "bogus", "unknown key"),
    ('[[rules]]\nname = "x"\nkind = "threshold"\nfactor = 1.5\nwindow = 3\n', "rules[3].window", "unknown key"),
    ('[[rules]]\nname = "x"\nkind = "streak"\nhold = "10 minutes"\n', "rules[3].hold", "not a duration"),
    ('[[rules]]\nname = "type-surge"\nkind = "threshold"\n', "rules[3].name", "duplicate rule name"),
    (
        '[[rules]]\nname = "x"\nkind = "threshold"\ntiers = { moderate = 1.4, severe = 3.0 }\n',
        "rules[3]",
        "must be above factor",
    ),
    (
        '[[rules]]\nname = "x"\nkind = "threshold"\ntiers = { moderate = 2.5, severe = 2.0 }\n',
        "rules[3]",
        "must be above tiers.moderate",
    ),
    (
        '[[rules]]\nname = "x"\nkind = "streak"\ntiers = { moderate = 4, severe = 12 }\n',
        "rules[3]",
        "must be above length",
    ),
    ('[[rules]]\nname = "x"\nkind = "sliding"\n', "rules[3]", "kind"),
    ('[[rules]]\nname = "x"\nkind = "streak"\nmax_gap = "soon"\n', "rules[3].max_gap", "not a duration"),
    ('[[rules]]\nname = "x"\nkind = "streak"\nmax_gap = "0s"\n', "rules[3]", "max_gap must be positive"),
    ('[[rules]]\nname = "x"\nkind = "quiet"\nmax_p = 1.5\n', "rules[3].max_p", "less than 1"),
    ('[[rules]]\nname = "x"\nkind = "quiet"\nmax_p = 0\n', "rules[3].max_p", "greater than 0"),
    ('[[rules]]\nname = "x"\nkind = "quiet"\nmin_expected = -1\n', "rules[3].min_expected", "greater than 0"),
    ('[[rules]]\nname = "x"\nkind = "quiet"\ngroup_by = ["customer"]\n', "rules[3].group_by[0]", "Input should be"),
    (
        '[[rules]]\nname = "x"\nkind = "quiet"\ngroup_by = ["channel", "channel"]\n',
        "rules[3].group_by",
        "lists a field twice",
    ),
    ('[[rules]]\nname = "x"\nkind = "quiet"\ntier = "critical"\n', "rules[3].tier", "Input should be"),
    ('[[rules]]\nname = "x"\nkind = "quiet"\nmax_pp = 0.1\n', "rules[3].max_pp", "did you mean 'max_p'"),
    ('[[routes]]\nreceivers = ["nobody"]\n', "routes[2].receivers[0]", "unknown receiver 'nobody'"),
    ('[[routes]]\nreceivers = ["cs-team"]\nescalate_to = ["ghost"]\n', "routes[2].escalate_to[0]", "unknown receiver"),
    ('[[routes]]\nreceivers = ["cs-team"]\nmute = ["25:00-08:00"]\n', "routes[2].mute[0]", "not a time of day"),
    ('[[routes]]\nreceivers = ["cs-team"]\nmatch = { type = "~([" }\n', "routes[2].match", "regular expression"),
    (
        '[[inhibit]]\nsource = { rule = "nope" }\ntarget = { rule = "type-surge" }\n',
        "inhibit[1].source.rule",
        "unknown rule",
    ),
    (
        '[[receivers]]\nname = "r"\nkind = "wecom"\nurl = "https://x"\nrate_limit = "fast"\n',
        "receivers[2].rate_limit",
        "not a rate",
    ),
    ('[[receivers]]\nname = "r"\nkind = "icq"\nurl = "https://x"\n', "receivers[2].kind", "Input should be"),
    (
        '[[receivers]]\nname = "r"\nkind = "slack"\nurl = "${NOT_SET_ANYWHERE}"\n',
        "receivers[2].url",
        "NOT_SET_ANYWHERE is not set",
    ),
]


@pytest.mark.parametrize(("snippet", "key", "words"), ERRORS)
def test_errors_name_file_key_and_reason(
    env: dict[str, str], tmp_path: Path, snippet: str, key: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, base(snippet) if not snippet.startswith("bogus") else snippet + base())
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert str(p) in err, err
    assert key in err, err
    assert words in err, err


@pytest.mark.parametrize(
    ("replace", "key", "words"),
    [
        ('timezone = "Asia/Shanghai"', "timezone", "unknown time zone"),
        ('poll_interval = "2s"', "source.poll_interval", "not a duration"),
        ('lateness = "5m"', "source.lateness", "not a duration"),
    ],
)
def test_bad_values_in_place(
    env: dict[str, str], tmp_path: Path, replace: str, key: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _, _ = replace.partition(" = ")
    broken = base().replace(replace, f'{name} = "Mars/Olympus"' if name == "timezone" else f'{name} = "2 parsecs"')
    p = write(tmp_path, broken)
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert key in err and words in err, err


def test_a_locale_the_page_does_not_speak_names_file_key_and_choices(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, 'locale = "fr"\n' + base())
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{p}: locale: Input should be 'zh_CN' or 'en'" in err and "Traceback" not in err


def test_toml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "timezone = \n")
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    assert "TOML syntax error" in capsys.readouterr().err


def test_distinct_needs_customer_column(env: dict[str, str], tmp_path: Path) -> None:
    text = base().replace(', customer = "customer_id"', "")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "rules[2].distinct" in str(err.value)


def test_secret_not_in_error_output(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAD_URL", "ftp://user:SECRET-PW@host/x")
    p = write(tmp_path, base('[[receivers]]\nname = "r"\nkind = "slack"\nurl = "${BAD_URL}"\n'))
    with pytest.raises(SystemExit):
        main(["check", "--config", str(p)])
    err = capsys.readouterr().err
    assert "receivers[2]" in err and "SECRET-PW" not in err


def test_quiet_rule_defaults_and_streak_max_gap_off(tmp_path: Path, env: dict[str, str]) -> None:
    from datetime import timedelta

    from sentinel.config import QuietRuleConfig, StreakRuleConfig

    rules = (
        '[[rules]]\nname = "q"\nkind = "quiet"\n[[rules]]\nname = "s"\nkind = "streak"\nmax_gap = "off"\n'
        '[[rules]]\nname = "s2"\nkind = "streak"\n'
    )
    cfg = load_config(write(tmp_path, base(rules)))
    quiet, off, default = cfg.rules[3:]
    assert isinstance(quiet, QuietRuleConfig) and quiet.group_by == ["channel"] and quiet.max_p == 1e-6
    assert quiet.min_expected == 5.0 and quiet.tier == "moderate" and quiet.baseline_days == 7
    assert quiet.baseline_by == "day_kind"
    assert isinstance(off, StreakRuleConfig) and off.max_gap is None
    assert isinstance(default, StreakRuleConfig) and default.max_gap == timedelta(hours=2)
    assert '"max_gap":"off"' in off.model_dump_json()


def test_rules_dir_toml_and_yaml(env: dict[str, str], tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.toml").write_text('[[rules]]\nname = "extra-total"\nkind = "threshold"\ngroup_by = []\n')
    (rules / "b.yaml").write_text("name: extra-streak\nkind: streak\nlength: 6\n")
    (rules / "c.yml").write_text("rules:\n  - name: bad\n    kind: streak\n    length: 1\n")
    p = write(tmp_path, 'rules_dir = "rules"\n' + base())
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(rules / "c.yml") in str(err.value) and "length" in str(err.value)
    (rules / "c.yml").unlink()
    cfg = load_config(p)
    assert [r.name for r in cfg.rules][-2:] == ["extra-total", "extra-streak"]


def test_check_runs_as_console_script(env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "check", "--config", str(FIXTURE)],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("5m", 300), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("250ms", 0.25), ("0s", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["5", "", "m", "5 parsecs", "-5s", "1h 2x"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_rates_and_windows() -> None:
    assert parse_rate("20/min").count == 20 and parse_rate("20/min").per_seconds == 60
    assert parse_rate("5/10s").per_seconds == 10
    w = parse_window("22:00-08:00")
    from datetime import time

    assert w.contains(time(23, 0)) and w.contains(time(7, 59)) and not w.contains(time(8, 0))
    assert not w.contains(time(12, 0))
    day = parse_window("12:00-13:30")
    assert day.contains(time(13, 0)) and not day.contains(time(13, 30))


def test_the_deploy_example_passes_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy/systemd/sentinel.toml.example, with its credentials where LoadCredential= puts them."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in (
        ("api_token", "t"),
        ("ack_secret", "a"),
        ("wecom_robot_1", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"),
    ):
        (creds / name).write_text(value + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    root = Path(__file__).parent.parent
    # installed as deploy/README.md says: the example as sentinel.toml, rules/recommended/*.toml beside it
    etc = tmp_path / "etc-sentinel"
    (etc / "rules").mkdir(parents=True)
    shutil.copy(root / "deploy" / "systemd" / "sentinel.toml.example", etc / "sentinel.toml")
    for f in (root / "rules" / "recommended").glob("*.toml"):
        shutil.copy(f, etc / "rules" / f.name)
    assert main(["check", "--config", str(etc / "sentinel.toml")]) == 0
    out = capsys.readouterr().out
    assert "rules: 4" in out and "type-channel-surge, channel-quiet, same-type-streak, type-surge" in out, out
    assert "inhibit rules: 2" in out and "cs-team (wecom)" in out and "key=K" not in out


def test_a_mistyped_key_gets_did_you_mean_from_its_own_table(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.toml"
    cfg.write_text(
        'timezon = "UTC"\n[source]\nurl = "sqlite:////tmp/crm.db"\ntabel = "complaints"\n'
        'columns = { typ = "category" }\n[[rules]]\nname = "r"\nkind = "threshold"\nfactr = 2\n'
        "bogus = 1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert sorted(err.value.problems) == sorted(
        [
            f"{cfg}: timezon: unknown key; did you mean 'timezone'?",
            f"{cfg}: source.tabel: unknown key; did you mean 'table'?",
            f"{cfg}: source.columns.typ: unknown key; did you mean 'type'?",
            f"{cfg}: rules[0].factr: unknown key; did you mean 'factor'?",
            f"{cfg}: rules[0].bogus: unknown key",  # nothing close: no guess
        ]
    )


@pytest.mark.parametrize(("value", "words"), [('"2 parsecs"', "not a duration"), ('"0s"', "must be positive")])
def test_reconcile_interval_is_a_positive_duration(
    env: dict[str, str], tmp_path: Path, value: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = load_config(write(tmp_path, base().replace('lateness = "5m"', 'lateness = "5m"\nreconcile_interval = "1m"')))
    assert ok.source is not None and ok.source.reconcile_interval.total_seconds() == 60
    assert load_config(FIXTURE).source.reconcile_interval.total_seconds() == 300  # type: ignore[union-attr]
    p = write(tmp_path, base().replace('lateness = "5m"', f'lateness = "5m"\nreconcile_interval = {value}'))
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "reconcile_interval" in err and words in err, err


@pytest.mark.parametrize(
    ("value", "words"), [('"1s"', "between 2s and 10m"), ('"11m"', "between 2s and 10m"), ('"soon"', "not a duration")]
)
def test_lease_ttl_is_validated(
    env: dict[str, str], tmp_path: Path, value: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_config(FIXTURE).state.lease_ttl.total_seconds() == 15
    ok = load_config(write(tmp_path, base() + '\n[state]\nlease_ttl = "30s"\n'))
    assert ok.state.lease_ttl.total_seconds() == 30
    p = write(tmp_path, base() + f"\n[state]\nlease_ttl = {value}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(p)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "state.lease_ttl" in err and words in err and "Traceback" not in err, err
