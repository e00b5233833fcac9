"""What the notifiers require of a configuration that the configuration itself cannot judge.

Run by `sentinel.loader` after the file parsed (at start-up, on reload, by `sentinel check`): a
`templates_dir` override must compile and render every message shape, so a broken template is refused
before it is used.
"""

from __future__ import annotations

from collections.abc import Iterator

from sentinel.config import Config


def config_problems(cfg: Config) -> Iterator[tuple[str, str]]:
    """(key path, problem) for each thing the notifiers would refuse."""
    if cfg.templates_dir is not None:
        from sentinel.notify.render import TemplateError, check_templates  # jinja2 only when there is an override

        try:
            check_templates(cfg.templates_dir)
        except TemplateError as exc:
            yield "templates_dir", str(exc)
