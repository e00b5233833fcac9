"""The light configuration reader of `status`, `ack` and `silence` (`sentinel.client_config`): it must
reject every bad value of the keys it reads exactly as the full configuration does (the same lines, in
the same order), read the good ones to the same values (environment over file), and keep pydantic out of
those commands. Each bad case is first shown to be refused by the full loader, so a case that nothing
refuses cannot pass for agreement."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.client_config import load_client_config
from sentinel.config import ApiConfig, Config, config_fields, load_config
from sentinel.config_common import API_KEYS, TOP_LEVEL_KEYS, ConfigError
from tests.test_api import open_instance, running  # noqa: F401  # `running` is a fixture

BAD = [
    # (file, SENTINEL_* variables)
    ("listen = 5\n", {}),
    ('listen = "9732"\n', {}),
    ('listen = "127.0.0.1:70000"\n', {}),
    ('timezone = "Mars/Olympus"\n', {}),
    ("timezone = 8\n", {}),
    ('locale = "fr"\n', {}),
    ("locale = 1\n", {}),
    ("api = 3\n", {}),
    ('[api]\ntokn = "x"\n', {}),
    ("[api]\ntoken = 5\n", {}),
    ('[api]\ntoken = ""\n', {}),
    ('[api]\ntoken = "${T_CLIENT_UNSET}"\n', {}),
    ('[api]\ntoken = "secret-file:/no/such/file"\n', {}),
    ('[api]\ntoken = "secret-file:relative"\n', {}),
    ('lisen = "127.0.0.1:9"\n', {}),
    ("bogus = 1\n", {}),
    ('listen = "127.0.0.1:9"\nbogus = 1\nlocale = "fr"\ntimezone = "Mars/X"\n[api]\ntokn = "x"\n', {}),  # order
    ("", {"SENTINEL_LISTEN": "nowhere"}),
    ("", {"sentinel_listen": "nowhere"}),  # names are not case-sensitive
    ("", {"SENTINEL_TIMEZONE": "Nowhere", "SENTINEL_LOCALE": "fr"}),
    ("", {"SENTINEL_API__TOKEN": ""}),
    ("", {"SENTINEL_API__TOKN": "x"}),
    ("", {"SENTINEL_API": '{"token": ""}'}),
    ("", {"SENTINEL_API": "5"}),
    ("", {"SENTINEL_API": "not json"}),  # a traceback of pydantic-settings before
    ("", {"SENTINEL_API": '{"token": "${T_CLIENT_UNSET}"}'}),
    ("", {"SENTINEL_BOGUS": "1"}),
    ("", {"SENTINEL_API__TOKEN": "x", "SENTINEL_API__TOKEN__X": "y"}),  # a traceback of `status` before
    ("", {"SENTINEL_TIMEZONE__NAME": "UTC"}),
    ('[api]\ntoken = "${T_CLIENT_UNSET}"\n', {"SENTINEL_BOGUS": "1"}),
]

GOOD = [
    ("", {}),
    ('listen = "0.0.0.0:9800"\ntimezone = "UTC"\nlocale = "en"\n[api]\ntoken = "${T_CLIENT_TOKEN}"\n', {}),
    ('[api]\ntoken = "secret-file:TOKEN"\nack_ttl = "2d"\n', {}),
    (
        'listen = "127.0.0.1:1"\n[api]\ntoken = "from-file"\n',
        {"SENTINEL_LISTEN": "127.0.0.1:2", "SENTINEL_API__TOKEN": "from-env"},
    ),
    ('[api]\ntoken = "from-file"\n', {"SENTINEL_API": '{"ack_ttl": "1d"}'}),  # merged into the table
    ("", {"SENTINEL_API": '{"token": "json"}', "SENTINEL_LOCALE": "en", "SENTINEL_TIMEZONE": "Europe/Paris"}),
]


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No `SENTINEL_*` of the machine's; a token variable and a credentials folder with a token file."""
    for k in list(os.environ):
        if k.upper().startswith("SENTINEL_") and not k.upper().startswith("SENTINEL_TEST_"):
            monkeypatch.delenv(k)
    monkeypatch.delenv("T_CLIENT_UNSET", raising=False)
    monkeypatch.setenv("T_CLIENT_TOKEN", "tok-CLIENT-1")
    (tmp_path / "TOKEN").write_text("tok-FILE-2\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    return monkeypatch


def _problems(load: object, path: Path) -> list[str]:
    try:
        load(path)  # type: ignore[operator]
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(("text", "variables"), BAD)
def test_the_light_reader_refuses_what_the_full_one_refuses_with_the_same_lines(
    environ: pytest.MonkeyPatch, tmp_path: Path, text: str, variables: dict[str, str]
) -> None:
    path = tmp_path / "sentinel.toml"
    path.write_text(text, encoding="utf-8")
    for k, v in variables.items():
        environ.setenv(k, v)
    full = _problems(lambda p: load_config(p, receiver_secrets=False), path)
    assert full, "the full configuration accepts this: not a bad case"
    assert all(line.startswith(f"{path}: ") for line in full)
    assert _problems(load_client_config, path) == full


@pytest.mark.parametrize(("text", "variables"), GOOD)
def test_the_light_reader_reads_what_the_full_one_reads(
    environ: pytest.MonkeyPatch, tmp_path: Path, text: str, variables: dict[str, str]
) -> None:
    path = tmp_path / "sentinel.toml"
    path.write_text(text, encoding="utf-8")
    for k, v in variables.items():
        environ.setenv(k, v)
    full, light = load_config(path, receiver_secrets=False), load_client_config(path)
    assert (light.listen, light.timezone, light.locale, light.token) == (
        full.listen,
        full.timezone,
        full.locale,
        full.api.token,
    )
    assert light.tz == full.tz


def test_the_light_reader_knows_the_same_keys_as_the_models() -> None:
    """Its lists of keys (for unknown keys, their "did you mean" and the `SENTINEL_*` checks) are the
    models' own fields: a key added to `Config` or `ApiConfig` must be added there too."""
    assert dict(TOP_LEVEL_KEYS) == config_fields()
    assert not any(f.alias for f in Config.model_fields.values())
    assert tuple(ApiConfig.model_fields) == API_KEYS


def test_file_errors_read_the_same(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("timezone = \n", encoding="utf-8")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('timezone = "Europe/Zürich"\n'.encode("latin-1"))
    for path in (missing, syntax, latin1):
        full = _problems(load_config, path)
        assert len(full) == 1 and _problems(load_client_config, path) == full


@pytest.mark.parametrize(
    "unused",
    [
        'state_url = "${T_CLIENT_UNSET}"\n',  # the database password's variable
        '[[rules]]\nname = "x"\nkind = "sliding"\n',  # a mistake in a rule
        '[[receivers]]\nname = "r"\nkind = "icq"\nurl = "https://x"\n',
        '[source]\nurl = "sqlite:///x.db"\n',
    ],
)  # neither table nor query
def test_what_the_commands_never_read_does_not_stop_them(
    environ: pytest.MonkeyPatch, tmp_path: Path, unused: str
) -> None:
    """`check` refuses each of these files; the on-call commands read their four keys from them."""
    path = tmp_path / "sentinel.toml"
    path.write_text('listen = "127.0.0.1:9800"\n' + unused, encoding="utf-8")
    assert _problems(load_config, path)
    assert load_client_config(path).listen == "127.0.0.1:9800"


def test_the_daemons_ack_secret_is_not_read(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """It signs the chat messages' ack links: a file only the daemon's user can read."""
    path = tmp_path / "sentinel.toml"
    path.write_text('[api]\ntoken = "tok"\nack_secret = "secret-file:/no/such"\n', encoding="utf-8")
    assert "api.ack_secret" in _problems(load_config, path)[0]
    token = load_client_config(path).token
    assert token is not None and token.get() == "tok"


def test_status_ack_and_silence_take_the_light_path_against_a_daemon(
    running: tuple[object, str, Path],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The on-call copy of the configuration whose rule `check` refuses still serves `status`, `ack` and
    `silence`: they read only the API's address and token (and the locale and time zone)."""
    _, url, cli = running
    oncall = cli.with_name("oncall.toml")
    oncall.write_text(cli.read_text(encoding="utf-8") + '[[rules]]\nname = "x"\nkind = "sliding"\n', encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["check", "--config", str(oncall)])
    assert "rules[1]" in capsys.readouterr().err
    assert main(["status", "--config", str(oncall), "--json"]) == 0
    assert main(["silence", "add", "type=物流配送延误", "--config", str(oncall), "--comment", "carrier"]) == 0
    assert main(["ack", open_instance(url), "--config", str(oncall), "--by", "ops"]) == 0


def _child(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`sentinel ARGS` in a fresh interpreter that reports, at exit, which heavy packages it imported."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('imported:', sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pydantic', 'pydantic_settings', 'sqlalchemy', 'numpy', 'requests', 'jinja2'}), file=sys.stderr))\n"
        "from sentinel.cli import main\nsys.exit(main())"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SENTINEL_")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "command", [["status"], ["ack", "x"], ["silence", "list"], ["silence", "add", "type=x", "--comment", "c"]]
)
def test_the_on_call_commands_import_no_pydantic(tmp_path: Path, command: list[str]) -> None:
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text('listen = "127.0.0.1:9"\n', encoding="utf-8")
    out = _child(*command, "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 1 and "cannot reach the daemon" in out.stderr, out.stderr
    assert "imported: []" in out.stderr, out.stderr


def test_a_bad_listen_stops_status_with_the_line_check_gives(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text('listen = "localhost"\n', encoding="utf-8")
    status, check = (
        _child("status", "--config", str(cfg), cwd=tmp_path),
        _child("check", "--config", str(cfg), cwd=tmp_path),
    )
    assert status.returncode == check.returncode == 2
    line = f"error: {cfg}: listen: 'localhost' is not host:port"
    assert status.stderr.splitlines()[0] == check.stderr.splitlines()[0] == line
    assert "Traceback" not in status.stderr + check.stderr
