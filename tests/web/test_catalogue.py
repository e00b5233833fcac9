"""The catalogue of the page's words: every locale has every key, with the same placeholders, so a
page in any locale renders without a missing word or a KeyError at format time."""

from __future__ import annotations

import string

from sentinel.web.catalogue import CATALOGUE, Text


def fields(entry: str | tuple[str, str]) -> set[str]:
    patterns = entry if isinstance(entry, tuple) else (entry,)
    return {name for p in patterns for _lit, name, _spec, _conv in string.Formatter().parse(p) if name}


def test_every_locale_has_every_key_with_the_same_placeholders() -> None:
    en = CATALOGUE["en"]
    for locale, strings in CATALOGUE.items():
        assert strings.keys() == en.keys(), locale
        for key, entry in strings.items():
            assert fields(entry) <= fields(en[key]) | {"n"}, (locale, key)


def test_counts_pick_the_english_plural_and_data_stays_an_argument() -> None:
    en, zh = Text("en"), Text("zh_CN")
    assert en("open_alerts_n", n=1) == "1 open alert" and en("open_alerts_n", n=2) == "2 open alerts"
    assert zh("open_alerts_n", n=2) == "2 条未恢复告警"
    assert en("receiver_down", name="{n}<b>", state="failing") == "Receiver {n}<b> is failing"  # not re-formatted
    assert zh.duration(3 * 3600 + 5 * 60) == "3 小时 5 分钟" and en.duration(59) == "59 s"
    assert zh.get("label.type", "type") == "类型" and zh.get("label.城市", "城市") == "城市"
    assert Text("fr").locale == "en"  # config validation keeps this out; the page still renders
