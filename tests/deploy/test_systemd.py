"""deploy/systemd: the unit passes `systemd-analyze verify`, carries every directive the deployment
relies on, and the environment-file example really configures Sentinel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "sentinel.service"
ENV_EXAMPLE = SYSTEMD / "sentinel.env.example"
DESIGN_CONFIG = ROOT / "tests" / "fixtures" / "design-example.toml"
INSTALLED_PATH = "/usr/local/bin/sentinel"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """section -> key -> values in order (a key may repeat); comments and continuations handled.

    An empty assignment resets the list, as systemd does (`CapabilityBoundingSet=` keeps one empty value
    so that "set to nothing" stays visible).
    """
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        key, value = key.strip(), value.strip()
        if value == "":
            section[key] = [""]
        else:
            section.setdefault(key, []).append(value)
    return unit


def seconds(value: str) -> float:
    """A systemd time span (`30s`, `5min`, `1min 30s`, `90`) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), f"bad time span {value!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is given {len(values)} times: {values}"
    return values[0]


EXACT = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecStart": f"{INSTALLED_PATH} run --config /etc/sentinel/sentinel.toml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "EnvironmentFile": "-/etc/sentinel/sentinel.env",
    "DynamicUser": "yes",
    "StateDirectory": "sentinel",
    "ConfigurationDirectory": "sentinel",
    "WorkingDirectory": "/var/lib/sentinel",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize(("key", "expected"), EXACT.items(), ids=list(EXACT))
def test_service_directive(unit: Unit, key: str, expected: str) -> None:
    assert one(unit, "Service", key) == expected


def test_timeouts(unit: Unit) -> None:
    watchdog = seconds(one(unit, "Service", "WatchdogSec"))
    assert 10 <= watchdog <= 120, "the heartbeat pings at half the interval; keep it between 10 s and 2 min"
    # The stop timeout covers the last cycle plus a flush attempt per receiver (timeout 10 s by default).
    assert seconds(one(unit, "Service", "TimeoutStopSec")) >= 60
    # Migrating a large store happens before READY=1: more than systemd's default 90 s.
    assert seconds(one(unit, "Service", "TimeoutStartSec")) > 90


def test_credentials(unit: Unit) -> None:
    creds = dict(v.split(":", 1) for v in unit["Service"]["LoadCredential"])
    assert creds["wecom_robot_1"] == "/etc/sentinel/credentials/wecom_robot_1"
    for name, path in creds.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name), f"credential id {name!r}"
        assert path == f"/etc/sentinel/credentials/{name}", "one file per credential, named like its id"


def test_install(unit: Unit) -> None:
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After").split()
    assert "network-online.target" in one(unit, "Unit", "Wants").split()


def test_parser_sees_repeats_and_resets() -> None:
    u = parse_unit("[Service]\n# c\nA=1\nA=2\nB=\nC=x \\\n  y\n")
    assert u == {"Service": {"A": ["1", "2"], "B": [""], "C": ["x y"]}}


# --- systemd-analyze -------------------------------------------------------------------------------


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    return exe


def _console_script() -> Path:
    script = Path(sys.executable).parent / "sentinel"
    if not script.exists():
        pytest.skip(f"the `sentinel` console script is not installed next to {sys.executable} (pip install -e .)")
    return script


def _unit_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart= pointing at this interpreter's `sentinel` (verify checks it exists)."""
    text = UNIT.read_text(encoding="utf-8")
    text, n = re.subn(
        rf"^ExecStart={re.escape(INSTALLED_PATH)} ", f"ExecStart={_console_script()} ", text, flags=re.MULTILINE
    )
    assert n == 1
    copy = tmp_path / "sentinel.service"
    copy.write_text(text + extra, encoding="utf-8")
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_systemd_analyze(), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0", "LANG": "C"},
    )


def _verify(unit_file: Path) -> tuple[int, list[str]]:
    """Exit status, and the output lines about our unit (noise about other units is left out)."""
    proc = _analyze("verify", "--man=no", str(unit_file))
    lines = (proc.stdout + proc.stderr).splitlines()
    ours = [line for line in lines if "sentinel.service" in line or str(unit_file.parent) in line]
    return proc.returncode, ours


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    rc, ours = _verify(_unit_copy(tmp_path))
    assert ours == [], "systemd-analyze verify complains about sentinel.service:\n" + "\n".join(ours)
    assert rc == 0


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The filter above is not blind: a misspelt directive shows up."""
    _, ours = _verify(_unit_copy(tmp_path, extra="\n[Service]\nProtectSytem=strict\n"))
    assert any("ProtectSytem" in line for line in ours), ours


def test_security_exposure(tmp_path: Path) -> None:
    proc = _analyze("security", "--offline=yes", "--no-pager", str(_unit_copy(tmp_path)))
    m = re.search(r"Overall exposure level for sentinel\.service: (\d+(?:\.\d+)?)", proc.stdout)
    if m is None:
        pytest.skip(f"this systemd-analyze cannot assess a unit file offline: {proc.stderr.strip()[:200]}")
    assert float(m.group(1)) <= 2.0, proc.stdout


# --- sentinel.env.example --------------------------------------------------------------------------


def _example_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"#([A-Z][A-Z0-9_]*)=(.*)", line)
        if m:
            env[m.group(1)] = m.group(2)
    return env


def test_env_example_is_all_commented_out() -> None:
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        assert line == "" or line.startswith("#"), f"active line in an example: {line!r}"


def test_env_example_configures_sentinel(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _example_env()
    assert "SENTINEL_SOURCE__POLL_INTERVAL" in env and "WECOM_ROBOT_1" in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(DESIGN_CONFIG)
    assert cfg.source is not None
    assert cfg.source.poll_interval.total_seconds() == 5
    assert cfg.source.lateness.total_seconds() == 600
    assert cfg.notify is False
    assert cfg.locale == "en"
    assert cfg.api.token is not None and cfg.api.token.get() == env["ALERT_API_TOKEN"]
    assert cfg.source.url.get() == env["SENTINEL_SOURCE__URL"]
    urls = [u.get() for u in cfg.receiver("cs-team").all_urls()]
    assert urls == [env["WECOM_ROBOT_1"], env["WECOM_ROBOT_2"]]


# --- two-hosts.conf --------------------------------------------------------------------------------


def test_the_two_hosts_drop_in_verifies_with_the_unit(tmp_path: Path) -> None:
    unit = _unit_copy(tmp_path)
    drop_ins = tmp_path / "sentinel.service.d"
    drop_ins.mkdir()
    (drop_ins / "two-hosts.conf").write_text((SYSTEMD / "two-hosts.conf").read_text(encoding="utf-8"), encoding="utf-8")
    rc, ours = _verify(unit)
    assert ours == [], "systemd-analyze verify complains about two-hosts.conf:\n" + "\n".join(ours)
    assert rc == 0


def test_the_two_hosts_drop_in_loads_the_shared_store_url_as_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys its comments name, applied to sentinel.toml.example, pass `sentinel check` with the credential
    where LoadCredential= puts it."""
    drop_in = parse_unit((SYSTEMD / "two-hosts.conf").read_text(encoding="utf-8"))
    assert drop_in["Service"]["LoadCredential"] == ["state_url:/etc/sentinel/credentials/state_url"]
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in (
        ("api_token", "t"),
        ("ack_secret", "a"),
        ("state_url", "postgresql+psycopg://s:PW@pg/s"),
        ("wecom_robot_1", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"),
    ):
        (creds / name).write_text(value + "\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    example = (SYSTEMD / "sentinel.toml.example").read_text(encoding="utf-8")
    keys = re.findall(
        r"^#     ((?:state_url|listen|external_url|lease_ttl) = \"[^\"]*\")",
        (SYSTEMD / "two-hosts.conf").read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert len(keys) == 4
    for key in keys[:3]:
        name = key.split(" ", 1)[0]
        example, n = re.subn(rf"^{name} = .*$", key, example, count=1, flags=re.MULTILINE)
        assert n == 1, name
    (tmp_path / "rules").mkdir()
    for f in (ROOT / "rules" / "recommended").glob("*.toml"):
        (tmp_path / "rules" / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    config = tmp_path / "sentinel.toml"
    config.write_text(example + f"\n[state]\n{keys[3]}\n", encoding="utf-8")
    cfg = load_config(config)
    assert cfg.state_url is not None and cfg.state_url.get().startswith("postgresql+psycopg://")
    assert cfg.listen == "10.0.0.11:9732" and cfg.state.lease_ttl.total_seconds() == 15
