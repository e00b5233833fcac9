"""What the notifiers require of a configuration that the configuration itself cannot judge.

Run by `sentinel.loader` after the file parsed (at start-up, on reload, by `sentinel check`), so a
problem is reported with the file's own, `FILE: KEY: REASON`:

- a receiver sets only keys its chat tool takes (`secret` signing, `keyword`, `hmac_secret`, mentions by
  mobile): which ones is written on each adapter class (`accepts`), not here;
- a `templates_dir` override compiles and renders every message shape, so a broken template is refused
  before it is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from sentinel.config import Config, ReceiverConfig, ReceiverKind
from sentinel.notify import ADAPTERS
from sentinel.tiers import Tier

_WHAT = {"secret": "`secret` (robot signing)", "keyword": "`keyword`", "hmac_secret": "`hmac_secret`"}


def config_problems(cfg: Config) -> Iterator[tuple[str, str]]:
    """(key path, problem) for each thing the notifiers would refuse."""
    for i, rc in enumerate(cfg.receivers):
        for problem in receiver_problems(rc):
            yield f"receivers[{i}]", problem
    if cfg.templates_dir is not None:
        from sentinel.notify.render import TemplateError  # jinja2 only when there is an override
        from sentinel.notify.template_check import check_templates

        try:
            check_templates(cfg.templates_dir)
        except TemplateError as exc:
            yield "templates_dir", str(exc)


def receiver_problems(rc: ReceiverConfig) -> Iterator[str]:
    """The keys of `rc` its chat tool does not take, each with the tools that do."""
    accepts = ADAPTERS[rc.kind].accepts
    given = {"secret": rc.secret, "keyword": rc.keyword, "hmac_secret": rc.hmac_secret}
    for key, value in given.items():
        if value is not None and key not in accepts:
            yield f"{_WHAT[key]} applies to {_kinds_taking(key)}, not {rc.kind}"
    for tier in Tier:
        m = rc.mention.for_tier(tier)
        if m and m.mobiles and "mobiles" not in accepts:
            yield f"mention.{tier.label}.mobiles: only {_kinds_taking('mobiles')} mention by mobile"


def _kinds_taking(key: str) -> str:
    """ "dingtalk, feishu and lark": the kinds whose adapter takes `key`, in the configuration's order."""
    kinds = [str(k) for k in get_args(ReceiverKind) if key in ADAPTERS[k].accepts]
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
