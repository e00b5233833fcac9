"""What a standby serves while another instance leads (real processes, real PostgreSQL): health, readiness as a
standby, metrics without the leader's series, the status page, both APIs and `sentinel status`, all from the
shared store; a silence and an acknowledgement made through the standby take effect on the leader; a
reload on a standby writes nothing and its rules apply once it leads."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.ha.cluster import TOKEN, TYPES, Cluster, cluster_fixture, wait_until
from tests.ha.test_failover import start_pair

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    yield from cluster_fixture(tmp_path, pg_url)


def metric(url: str, name: str) -> float:
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}")


def status_text(c: Cluster, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "status", "--config", str(c.instances[name].config)],
        capture_output=True,
        text=True,
        env={**c.env, "COLUMNS": "250"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_standby_serves_the_shared_state_and_its_writes_take_effect_on_the_leader(cluster: Cluster) -> None:
    c = cluster
    start_pair(c)
    a, b = c.instances["a"], c.instances["b"]
    me_a, me_b = a.app.removeprefix("sentinel "), b.app.removeprefix("sentinel ")
    c.streak(TYPES[0])
    wait_until("the first message", lambda: c.all_delivered(1), log=c.logs)

    # what the standby says about itself and the leader
    assert requests.get(f"{b.url}/healthz", timeout=5).text == "ok\n"
    code, text = b.readyz()
    assert code == 200 and text.startswith(f"ready: standby; the leader is {me_a} (epoch 1, lease renewed")
    assert requests.get(f"{b.url}/-/ready", timeout=5).status_code == 200
    assert a.readyz() == (200, "ready\n")
    assert metric(b.url, "sentinel_leader") == 0 and metric(a.url, "sentinel_leader") == 1
    assert metric(b.url, "sentinel_leader_epoch") == 1 and metric(b.url, "sentinel_leader_lease_age_seconds") < 4
    assert metric(a.url, 'sentinel_leadership_changes_total{change="acquired"}') == 1
    assert "sentinel_streak_length{" not in requests.get(f"{b.url}/metrics", timeout=5).text
    lead = requests.get(f"{b.url}/api/v1/status", timeout=5).json()["leadership"]
    assert lead["role"] == "standby" and lead["instance"] == me_b and lead["leader"]["instance"] == me_a
    assert lead["leader"]["epoch"] == 1 and lead["leader"]["lease_ttl_seconds"] == 4.0 and lead["epoch"] is None
    assert f"leader: this instance ({me_a}), epoch 1, lease renewed" in status_text(c, "a")
    assert f"standby: this instance ({me_b}); the leader is {me_a}, epoch 1" in status_text(c, "b")

    # the shared store's alerts and silences, through the standby
    v1 = requests.get(f"{b.url}/api/v1/alerts", timeout=5).json()
    assert [x["labels"]["type"] for x in v1 if x["state"] == "open"] == [TYPES[0]]
    v2 = requests.get(f"{b.url}/api/v2/alerts", timeout=5).json()
    assert [x["labels"]["type"] for x in v2] == [TYPES[0]]
    page = requests.get(f"{b.url}/", timeout=5).text
    assert "Standby: this instance stands by" in page and f"{me_a} (epoch 1)" in page and TYPES[0] in page
    assert "Standby:" not in requests.get(f"{a.url}/", timeout=5).text

    silence = requests.post(
        f"{b.url}/api/v2/silences",
        headers=AUTH,
        timeout=5,
        json={
            "matchers": [{"name": "type", "value": TYPES[1], "isRegex": False}],
            "startsAt": "2020-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "on-call",
            "comment": "known outage",
        },
    )
    assert silence.status_code == 200, silence.text
    instance = v1[0]["instance"]
    acked = requests.post(f"{b.url}/api/v1/ack", headers=AUTH, json={"instance": instance, "by": "on-call"}, timeout=5)
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert [s["id"] for s in requests.get(f"{a.url}/api/v1/silences", timeout=5).json()] == [
        silence.json()["silenceID"]
    ]
    c.streak(TYPES[1])  # silenced through the standby: the leader tells nobody
    c.streak(TYPES[2])
    wait_until("the third alert's message", lambda: len(c.outbox()) == 2 and c.all_delivered(), log=c.logs)
    time.sleep(1.0)
    alerts = {x["labels"]["type"]: x for x in requests.get(f"{a.url}/api/v1/alerts", timeout=5).json()}
    assert alerts[TYPES[1]]["silenced"] and alerts[TYPES[0]]["acknowledged"]
    assert len(c.outbox()) == 2 and c.senders() == {"a": 2}

    # a reload on the standby: accepted, nothing written; its rules apply once it leads
    b.config.write_text(b.config.read_text(encoding="utf-8").replace("length = 5", "length = 6"), encoding="utf-8")
    assert b.daemon is not None
    b.daemon.proc.send_signal(1)  # SIGHUP
    b.daemon.wait_for("configuration reloaded")
    a.kill()
    wait_until("B leads", lambda: b.role() == "leader", log=c.logs)
    wait_until("B ready as the leader", lambda: b.readyz() == (200, "ready\n"), log=c.logs)
    c.streak(TYPES[3], n=5)  # five: no streak for B's rules any more
    c.streak(TYPES[4], n=6)

    def firing() -> set[str]:
        return {
            x["labels"]["type"] for r in list(c.hook.requests) for x in r.json["alerts"][:1] if x["status"] == "firing"
        }

    wait_until("the six-in-a-row message", lambda: TYPES[4] in firing(), log=c.logs)
    wait_until("every message delivered", c.all_delivered, log=c.logs)
    time.sleep(1.0)
    assert firing() == {TYPES[0], TYPES[2], TYPES[4]}  # the rule change resolved the open ones, as a reload does
    assert "rules changed since the last run" in b.log() and not b.tracebacks()
