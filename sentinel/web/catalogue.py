"""The words of the status page, its charts, `sentinel status` and `backtest --plot`, per `locale` (zh_CN, en).

One dict per locale, the same keys in each (a test holds them to it), so a page never mixes languages
and a new string is added in one place. An entry is a `str.format` pattern; an English entry that
depends on a count is a (one, many) pair, chosen by `n`. Data (type names, receiver names, errors) are
only ever format arguments, and the result is plain text: the template's autoescape escapes it whole.
Notification messages have their own templates (`sentinel/notify/templates/<locale>/`).
"""

from __future__ import annotations

from collections.abc import Mapping

Entry = str | tuple[str, str]

EN: dict[str, Entry] = {
    "page_title": "Sentinel status",
    "open_alerts_n": ("{n} open alert", "{n} open alerts"),
    "tier_count": "{n} {tier}",
    "list_sep": ", ",
    "colon": ": ",
    "source": "source",
    "source_heading": "Source",
    "up": "up",
    "down": "DOWN",
    "down_lower": "down",
    "unknown": "unknown",
    "lag": "lag {d}",
    "refreshes": "refreshes every {n} s",
    "dry_run": "Dry run: alerts are detected and recorded, but nothing is sent to any receiver.",
    "receiver_down": "Receiver {name} is {state}",
    "waiting": ("{n} message waiting", "{n} messages waiting"),
    "details": "details",
    "source_down": "Source down: {error}",
    "not_polled": "not polled yet",
    "standby_source": "polled by the leader",
    "standby_banner": "Standby: this instance stands by and takes over if the leader stops; the leader is {leader}. "
                      "This page shows the shared state store; silences and acknowledgements made here take effect "
                      "on the leader.",
    "no_leader": "no instance right now",
    "open_heading": "Open alerts ({n})",
    "no_open": "No open alerts.",
    "rule": "rule {rule}",
    "all_complaints": "all complaints",
    "in_24h": "in 24 h",
    "by_time_of_day": "by that time of day",
    "vs_baseline": "vs baseline",
    "new_no_history": "(new: no history)",
    "at_last_change": "at its last change, {when}",
    "peak": "peak {n}",
    "today_so_far": "today so far",
    "run_of": "run of",
    "in_a_row": "in a row",
    "normal_day_runs": "a normal day has {n} such runs",
    "started": "started {when} ({ago} ago)",
    "charts_capped": "{n} more alerted series without a chart (the page draws the most severe first).",
    "resolved_heading": "Recently resolved ({n})",
    "no_resolved": "None in the last 24 hours.",
    "silences_heading": "Silences ({n})",
    "no_silences": "No active silences.",
    "receivers_heading": "Receivers",
    "pending_n": ("{n} message pending", "{n} messages pending"),
    "no_receivers": "No receivers configured.",
    "oldest": "oldest {age}",
    "in": "in {d}",
    "due_now": "due now",
    "before_restart": "before the last restart",
    "time_unknown": "time unknown",
    "none": "none",
    "nothing_yet": "nothing yet",
    "attempts_n": ("{n} attempt", "{n} attempts"),
    "now_minus_newest": "(now − newest record)",
    "done": "done",
    "in_progress": "in progress",
    "problem_store": "state store unreachable: {error}",
    "problem_alerts": "alerts unavailable: {error}",
    # badges: the kind names what holds an alert back, the detail says by what
    "badge.silenced": "silenced",
    "badge.inhibited": "inhibited",
    "badge.acknowledged": "acknowledged",
    "badge.muted": "muted",
    "held.silenced": "by {who}: {comment}",
    "held.inhibited": "by alert {instance}",
    "held.acknowledged": "by {who} at {when}",
    "held.muted": "by a mute window on its route; sent when the window ends",
    # tables
    "col.series": "series", "col.rule": "rule", "col.tier": "tier", "col.started": "started",
    "col.resolved": "resolved", "col.lasted": "lasted", "col.peak": "peak", "col.why": "why",
    "col.matchers": "matchers", "col.state": "state", "col.from": "from", "col.until": "until", "col.by": "by",
    "col.comment": "comment", "col.receiver": "receiver", "col.kind": "kind", "col.failures": "failures in a row",
    "col.pending": "pending", "col.next": "next attempt", "col.last_error": "last error",
    "col.delivered": "last delivered", "col.permanent": "recent permanent failures",
    "col.fails": "fails", "col.pending_oldest": "pending (oldest)", "col.name": "name", "col.id": "id",
    "col.created": "created", "col.error": "error",
    "row.source": "source", "row.state": "state", "row.lag": "lag", "row.newest": "newest record",
    "row.watermark": "watermark", "row.backfill": "backfill",
    "silence.active": "active", "silence.pending": "pending", "silence.expired": "expired",
    "state.ok": "ok", "state.retrying": "retrying", "state.failing": "failing", "state.set_aside": "set aside",
    "tier.light": "light", "tier.moderate": "moderate", "tier.severe": "severe",
    "response.light": "level III response", "response.moderate": "level II response",
    "response.severe": "level I response",
    "label.type": "type", "label.channel": "channel",
    # filters
    "filter": "Filter",
    "filter.tier": "tier", "filter.rule": "rule", "filter.type": "type", "filter.any": "any",
    "filter.apply": "Apply", "filter.clear": "show all",
    "filter.showing": "showing {n} of {total} open alerts",
    # durations
    "dur.s": "{s} s", "dur.m": "{m} min", "dur.hm": "{h} h {m} min", "dur.dh": "{d} d {h} h",
    # the chart
    "chart.title": "{rule} {series}: daily complaints, last {n} days",
    "chart.count": "daily count", "chart.baseline": "baseline", "chart.threshold": "threshold",
    "chart.today": "today", "chart.today_tip": " (today so far)",
    "chart.tip_lines": ", baseline {baseline}, threshold {threshold}", "chart.no_baseline": ", no baseline yet",
    # backtest --plot (the legend's count, baseline and threshold are the chart's)
    "plot.title": "{rule} {series}", "plot.label": "{name}={value}", "plot.all": "all complaints",
    "plot.alert": "{rule} {tier}", "plot.warning": "{rule} ({kind})",
    "plot.ylabel": "complaints a day", "plot.xlabel": "day ({tz})",
    "kind.threshold": "threshold", "kind.streak": "streak",
    # sentinel status
    "cli.head": "sentinel {version}{dry} — source {source}: {state}; newest record {newest} (lag {lag} s)",
    "cli.dry": " (dry run)",
    "cli.warning": "warning:",
    "cli.lock_lost": "state store lock LOST:",
    "cli.lock_losses": "state store lock: held; lost {losses} time(s), last at {at} ({reason}), "
                       "re-taken after {after} s",
    "cli.leader": "leader: this instance ({me}), epoch {epoch}, lease renewed {age} s ago (lease_ttl {ttl} s)",
    "cli.single": "leader: this instance ({me}), the only one of its SQLite state store",
    "cli.standby": "standby: this instance ({me}); the leader is {leader}, epoch {epoch}, lease renewed {age} s ago "
                   "(lease_ttl {ttl} s)",
    "cli.standby_none": "standby: this instance ({me}); no instance leads right now",
    "cli.open": "open alerts: {open}; outbox pending: {pending}",
    "cli.times": "times in {tz}",
    "cli.receivers": "Receivers",
    "cli.failed": "Permanent failures (kept)",
    "cli.last_error": "{name}: last error ({at}): {error}",
}

ZH: dict[str, Entry] = {
    "page_title": "Sentinel 状态",
    "open_alerts_n": "{n} 条未恢复告警",
    "tier_count": "{tier} {n}",
    "list_sep": "，",
    "colon": "：",
    "source": "数据源",
    "source_heading": "数据源",
    "up": "正常",
    "down": "中断",
    "down_lower": "中断",
    "unknown": "未知",
    "lag": "延迟 {d}",
    "refreshes": "每 {n} 秒刷新",
    "dry_run": "演练模式：告警照常检测和记录，但不发送给任何接收方。",
    "receiver_down": "接收方 {name} {state}",
    "waiting": "{n} 条消息等待发送",
    "details": "详情",
    "source_down": "数据源中断：{error}",
    "not_polled": "尚未读取",
    "standby_source": "由主实例读取",
    "standby_banner": "备用实例：本实例待命，主实例停止时接管；当前主实例为 {leader}。本页显示共享状态库的内容；"
                      "在此设置的静默和确认由主实例生效。",
    "no_leader": "暂无",
    "open_heading": "未恢复告警（{n}）",
    "no_open": "没有未恢复的告警。",
    "rule": "规则 {rule}",
    "all_complaints": "全部投诉",
    "in_24h": "（24 小时内）",
    "by_time_of_day": "（截至当日此时）",
    "vs_baseline": "对比基线",
    "new_no_history": "（新出现：无历史）",
    "at_last_change": "最近变化于 {when}",
    "peak": "峰值 {n}",
    "today_so_far": "今日累计",
    "run_of": "连续",
    "in_a_row": "条",
    "normal_day_runs": "平常一天约有 {n} 次这样的连续",
    "started": "开始于 {when}（{ago}前）",
    "charts_capped": "另有 {n} 个告警序列未画图（页面优先画最严重的）。",
    "resolved_heading": "最近恢复（{n}）",
    "no_resolved": "最近 24 小时没有。",
    "silences_heading": "静默（{n}）",
    "no_silences": "没有生效的静默。",
    "receivers_heading": "接收方",
    "pending_n": "{n} 条消息待发送",
    "no_receivers": "未配置接收方。",
    "oldest": "最早 {age}",
    "in": "{d}后",
    "due_now": "即将发送",
    "before_restart": "上次重启之前",
    "time_unknown": "时间未知",
    "none": "无",
    "nothing_yet": "尚无",
    "attempts_n": "尝试 {n} 次",
    "now_minus_newest": "（当前时间 − 最新记录）",
    "done": "已完成",
    "in_progress": "进行中",
    "problem_store": "状态库无法连接：{error}",
    "problem_alerts": "告警无法读取：{error}",
    "badge.silenced": "已静默",
    "badge.inhibited": "已抑制",
    "badge.acknowledged": "已确认",
    "badge.muted": "静音时段",
    "held.silenced": "由 {who}：{comment}",
    "held.inhibited": "由告警 {instance}",
    "held.acknowledged": "由 {who} 于 {when}",
    "held.muted": "其路由处于静音时段；时段结束后发送",
    "col.series": "序列", "col.rule": "规则", "col.tier": "级别", "col.started": "开始",
    "col.resolved": "恢复", "col.lasted": "持续", "col.peak": "峰值", "col.why": "原因",
    "col.matchers": "匹配条件", "col.state": "状态", "col.from": "起", "col.until": "止", "col.by": "创建人",
    "col.comment": "说明", "col.receiver": "接收方", "col.kind": "类型", "col.failures": "连续失败",
    "col.pending": "待发送", "col.next": "下次尝试", "col.last_error": "最近错误",
    "col.delivered": "最近送达", "col.permanent": "最近的永久失败",
    "col.fails": "连续失败", "col.pending_oldest": "待发送（最早）", "col.name": "名称", "col.id": "编号",
    "col.created": "创建", "col.error": "错误",
    "row.source": "数据源", "row.state": "状态", "row.lag": "延迟", "row.newest": "最新记录",
    "row.watermark": "水位", "row.backfill": "回填",
    "silence.active": "生效中", "silence.pending": "未开始", "silence.expired": "已过期",
    "state.ok": "正常", "state.retrying": "重试中", "state.failing": "持续失败", "state.set_aside": "已搁置",
    "tier.light": "轻度", "tier.moderate": "中度", "tier.severe": "重度",
    "response.light": "三级响应", "response.moderate": "二级响应", "response.severe": "一级响应",
    "label.type": "类型", "label.channel": "渠道",
    "filter": "筛选",
    "filter.tier": "级别", "filter.rule": "规则", "filter.type": "类型", "filter.any": "全部",
    "filter.apply": "应用", "filter.clear": "显示全部",
    "filter.showing": "显示 {n} / {total} 条未恢复告警",
    "dur.s": "{s} 秒", "dur.m": "{m} 分钟", "dur.hm": "{h} 小时 {m} 分钟", "dur.dh": "{d} 天 {h} 小时",
    "chart.title": "{rule} {series}：近 {n} 天每日投诉",
    "chart.count": "每日数量", "chart.baseline": "基线", "chart.threshold": "阈值",
    "chart.today": "今天", "chart.today_tip": "（今日累计）",
    "chart.tip_lines": "，基线 {baseline}，阈值 {threshold}", "chart.no_baseline": "，尚无基线",
    "plot.title": "{rule} {series}", "plot.label": "{name}={value}", "plot.all": "全部投诉",
    "plot.alert": "{rule} {tier}", "plot.warning": "{rule}（{kind}）",
    "plot.ylabel": "每日投诉数", "plot.xlabel": "日期（{tz}）",
    "kind.threshold": "阈值", "kind.streak": "连续同类",
    "cli.head": "sentinel {version}{dry} — 数据源 {source}：{state}；最新记录 {newest}（延迟 {lag} 秒）",
    "cli.dry": "（演练模式）",
    "cli.warning": "警告：",
    "cli.lock_lost": "状态库的锁已丢失：",
    "cli.lock_losses": "状态库的锁：已持有；运行中丢失 {losses} 次，最近一次 {at}（{reason}），{after} 秒后重新取得",
    "cli.leader": "主实例：本实例（{me}），任期 {epoch}，租约 {age} 秒前续期（lease_ttl {ttl} 秒）",
    "cli.single": "主实例：本实例（{me}），其 SQLite 状态库的唯一实例",
    "cli.standby": "备用实例：本实例（{me}）；主实例为 {leader}，任期 {epoch}，"
                   "租约 {age} 秒前续期（lease_ttl {ttl} 秒）",
    "cli.standby_none": "备用实例：本实例（{me}）；暂无主实例",
    "cli.open": "未恢复告警：{open}；待发送消息：{pending}",
    "cli.times": "时间为 {tz}",
    "cli.receivers": "接收方",
    "cli.failed": "永久失败（保留）",
    "cli.last_error": "{name}：最近错误（{at}）：{error}",
}

CATALOGUE: Mapping[str, Mapping[str, Entry]] = {"en": EN, "zh_CN": ZH}
LOCALES = tuple(CATALOGUE)


class Text:
    """The words of one locale: `text("open_heading", n=3)`; `text.get("label.x", "x")` for a key that
    may be absent (a label without a translation reads as itself)."""

    def __init__(self, locale: str) -> None:
        self.locale = locale if locale in CATALOGUE else "en"
        self.strings = CATALOGUE[self.locale]

    def __call__(self, key: str, n: int | None = None, **values: object) -> str:
        entry = self.strings[key]
        if isinstance(entry, tuple):
            entry = entry[0] if n == 1 else entry[1]
        return entry.format(n=n, **values)

    def get(self, key: str, default: str) -> str:
        entry = self.strings.get(key)
        return default if entry is None else self(key)

    def duration(self, seconds: float | None) -> str:
        """Short and rounded down, for ages and waits: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
        if seconds is None:
            return "—"
        s = max(0, int(seconds))
        if s < 60:
            return self("dur.s", s=s)
        m, s = divmod(s, 60)
        if m < 60:
            return self("dur.m", m=m)
        h, m = divmod(m, 60)
        if h < 48:
            return self("dur.hm", h=h, m=m)
        return self("dur.dh", d=h // 24, h=h % 24)
