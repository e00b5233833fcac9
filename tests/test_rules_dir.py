"""The top-level `rules/` folder of the design: the seeds' two rules (`rules/seeds/`) and the settings
calibrated on real data (`rules/recommended/`), loaded with `rules_dir`, used by the demo and the deploy
example. Every file passes `sentinel check`; names given twice are an error naming both files."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.config import StreakRuleConfig, ThresholdRuleConfig, load_config
from sentinel.demo import rules_dir as demo_rules_dir

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = sorted(p for p in (ROOT / "rules").iterdir() if p.is_dir())
STANDALONE = sorted(f for d in FOLDERS for f in d.glob("*.toml") if "inhibit" not in tomllib.loads(f.read_text()))


@pytest.fixture(autouse=True)
def _no_sentinel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("SENTINEL_"):
            monkeypatch.delenv(k)


def config_using(tmp_path: Path, folder: Path, extra: str = "") -> Path:
    """A configuration beside a copy of `folder` named `rules`, as deploy/README.md installs it."""
    shutil.copytree(folder, tmp_path / "rules")
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text('rules_dir = "rules"\n' + extra, encoding="utf-8")
    return cfg


def test_the_folders_are_there() -> None:
    assert [p.name for p in FOLDERS] == ["recommended", "seeds"]
    assert len(STANDALONE) == 5


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_each_folder_passes_check(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(config_using(tmp_path, folder))]) == 0
    out = capsys.readouterr().out
    expected = {
        "seeds": "rules: 2 (1 streak, 1 threshold): same-type-streak, type-surge",
        "recommended": "rules: 3 (1 quiet, 1 streak, 1 threshold): channel-quiet, same-type-streak, type-surge",
    }
    assert expected[folder.name] in out, out
    assert "inhibit rules: 1" in out


@pytest.mark.parametrize("rule_file", STANDALONE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_rule_file_passes_check_on_its_own(rule_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(rule_file)]) == 0
    assert "rules: 1" in capsys.readouterr().out


def test_the_seed_rules_are_the_seeds_words(tmp_path: Path) -> None:
    """003 风险预警体系建立: above 1.5 × the daily average; the same type five times in a row; tiers of 004."""
    cfg = load_config(config_using(tmp_path, ROOT / "rules" / "seeds"))
    surge, streak = (next(r for r in cfg.rules if r.kind == k) for k in ("threshold", "streak"))
    assert isinstance(surge, ThresholdRuleConfig) and isinstance(streak, StreakRuleConfig)
    assert (surge.factor, surge.baseline_days, surge.group_by, surge.max_p) == (1.5, 7, ["type"], None)
    assert (surge.tiers.moderate, surge.tiers.severe) == (2.0, 3.0)
    assert (streak.field, streak.length, streak.scope, streak.max_expected_per_day) == ("type", 5, [], None)
    (inhibit,) = cfg.inhibit
    assert inhibit.source == {"rule": "type-surge"} and inhibit.target == {"rule": "same-type-streak"}
    assert inhibit.equal == ["type"]


def test_the_recommended_rules_are_the_calibrated_ones(tmp_path: Path) -> None:
    """rules/recommended/ is examples/boston311.toml's calibration (tests/detect/test_boston311.py measures
    it) with the design's internal channel instead of Boston's."""
    ours = load_config(config_using(tmp_path, ROOT / "rules" / "recommended"))
    boston = load_config(ROOT / "examples" / "boston311.toml")
    by_name = {r.name: r for r in ours.rules}
    for rule in boston.rules:
        mine = by_name[rule.name].model_dump(exclude={"where_not"})
        assert mine == rule.model_dump(exclude={"where_not"}), rule.name
        assert by_name[rule.name].where_not.channel == ["内部录入"]


def test_rules_dir_merges_with_inline_rules_and_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    cfg = config_using(
        tmp_path / "etc",
        ROOT / "rules" / "seeds",
        '[[rules]]\nname = "total-surge"\nkind = "threshold"\ngroup_by = []\n',
    )
    loaded = load_config(cfg)  # read from another working directory: the folder is found beside the file
    assert [r.name for r in loaded.rules] == ["total-surge", "same-type-streak", "type-surge"]


def test_a_name_inline_and_in_a_rule_file_is_an_error_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_using(
        tmp_path, ROOT / "rules" / "seeds", '[[rules]]\nname = "type-surge"\nkind = "threshold"\nmin_count = 30\n'
    )
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(cfg)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "duplicate" in x)
    assert line == (
        f"error: {tmp_path / 'rules' / 'type-surge.toml'}: rules[0].name: duplicate rule name "
        f"'type-surge' (also {cfg}: rules[0])"
    ), err
    assert "Traceback" not in err


def test_a_name_in_two_rule_files_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_using(tmp_path, ROOT / "rules" / "seeds")
    shutil.copy(tmp_path / "rules" / "type-surge.toml", tmp_path / "rules" / "zz-copy.toml")
    with pytest.raises(SystemExit):
        main(["check", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'rules' / 'zz-copy.toml'}: rules[0].name: duplicate rule name 'type-surge' "
        f"(also {tmp_path / 'rules' / 'type-surge.toml'}: rules[0])"
    ) in err, err


def test_a_problem_in_a_rule_files_inhibit_names_that_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_using(tmp_path, ROOT / "rules" / "seeds")
    (tmp_path / "rules" / "type-surge.toml").unlink()
    with pytest.raises(SystemExit):
        main(["check", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'rules' / 'streak-under-surge.toml'}: inhibit[0].source.rule: unknown rule 'type-surge'" in err
    ), err


def test_a_bad_key_in_a_one_rule_yaml_file_is_named_by_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_using(tmp_path, ROOT / "rules" / "seeds")
    (tmp_path / "rules" / "extra.yaml").write_text("name: total\nkind: threshold\nfactr: 2\n")
    with pytest.raises(SystemExit):
        main(["check", "--config", str(cfg)])
    assert f"{tmp_path / 'rules' / 'extra.yaml'}: factr: unknown key" in capsys.readouterr().err


def test_a_rule_file_with_an_unknown_section_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_using(tmp_path, ROOT / "rules" / "seeds")
    (tmp_path / "rules" / "routes.toml").write_text('[[routes]]\nreceivers = ["x"]\n[[rules]]\nname = "a"\n')
    with pytest.raises(SystemExit):
        main(["check", "--config", str(cfg)])
    assert f"{tmp_path / 'rules' / 'routes.toml'}: routes: unknown key" in capsys.readouterr().err


def test_the_demo_reads_the_packaged_seed_rules() -> None:
    """The demo reads the copy inside the package (the wheel ships it), which is the top-level folder's."""
    assert demo_rules_dir().is_relative_to(Path(__import__("sentinel").__file__).parent)
    packaged = {f.name: f.read_bytes() for f in demo_rules_dir().glob("*.toml")}
    assert packaged == {f.name: f.read_bytes() for f in (ROOT / "rules" / "seeds").glob("*.toml")}


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_each_example_config_passes_check(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(example)]) == 0
    assert "same-type-streak" in capsys.readouterr().out


def test_sentinel_rules_dir_in_the_environment_is_the_folder_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_using(tmp_path, ROOT / "rules" / "seeds")
    monkeypatch.setenv("SENTINEL_RULES_DIR", str(ROOT / "rules" / "recommended"))
    loaded = load_config(cfg)
    streak = next(r for r in loaded.rules if isinstance(r, StreakRuleConfig))
    assert streak.length == 6 and loaded.rules_dir == ROOT / "rules" / "recommended"
