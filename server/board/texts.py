"""The board's words, per language: zh-CN by default, English with ``?lang=en``.

One small dict per language keeps every visible text in one place: the templates read it as
``t``, and the JavaScript gets the same dict as JSON in the page's ``data-texts`` attribute,
so live updates speak the page's language without a second copy of the words.
"""

from __future__ import annotations

from typing import Final, Literal

from aiohttp import web

Lang = Literal["zh-CN", "en"]
DEFAULT: Final[Lang] = "zh-CN"
#: The cookie that remembers a choice made with ``?lang=``.
COOKIE: Final = "siheyi_lang"

ZH: Final[dict[str, str]] = {
    "title": "四合一核验 · 值守看板",
    "board": "看板",
    "alerts": "告警",
    "lookup": "一键三查",
    "audit": "审计记录",
    "login": "登录",
    "logout": "退出",
    "username": "用户名",
    "password": "密码",
    "totp": "动态口令（如已启用）",
    "login_failed": "用户名或密码错误",
    "site": "场所",
    "gate": "闸口",
    "kiosk": "终端",
    "online": "在线",
    "offline": "离线",
    "reader": "读卡器",
    "camera": "摄像头",
    "audio": "音频",
    "clock": "时钟",
    "circuit": "上游熔断",
    "circuit_closed": "正常",
    "circuit_open": "已熔断",
    "backlog": "待上传日志",
    "version": "软件版本",
    "last_seen": "最近心跳",
    "last_tap": "最近刷卡",
    "today": "今日统计",
    "recent": "最近刷卡",
    "time": "时间",
    "masked_id": "证件号（脱敏）",
    "outcome": "结果",
    "reasons": "原因",
    "offline_flag": "离线判定",
    "yes": "是",
    "no": "否",
    "ok": "正常",
    "fault": "故障",
    "absent": "未配置",
    "trusted": "可信",
    "untrusted": "不可信",
    "unknown": "未知",
    "none": "无",
    "no_kiosks": "没有可见的终端。",
    "open_gate": "远程开闸",
    "reason": "原因（必填）",
    "send": "发送",
    "gate_acked": "终端已确认开闸",
    "failed": "失败",
    "level": "级别",
    "kind": "类型",
    "raised": "产生时间",
    "note": "处理说明",
    "ack": "确认",
    "acked": "已确认",
    "no_alerts": "当前没有告警。",
    "id_number": "身份证号",
    "phone": "手机号",
    "search": "查询",
    "recovery": "恢复通行的办法",
    "checks": "核查明细",
    "filter": "筛选",
    "since": "开始时间",
    "until": "结束时间",
    "device": "终端编号",
    "more": "更多",
    "export_csv": "导出 CSV",
    "export_json": "导出 JSON",
    "live": "实时",
    "reconnecting": "重新连接中…",
    "pass": "通行",
    "check": "核查",
    "nat_expired": "核酸超时",
    "invalid_credential": "证件无效",
    "language": "English",
}

EN: Final[dict[str, str]] = {
    "title": "Siheyi · guard board",
    "board": "Board",
    "alerts": "Alerts",
    "lookup": "Lookup",
    "audit": "Audit trail",
    "login": "Log in",
    "logout": "Log out",
    "username": "User name",
    "password": "Password",
    "totp": "One-time code (if enabled)",
    "login_failed": "Wrong user name or password",
    "site": "Site",
    "gate": "Gate",
    "kiosk": "Kiosk",
    "online": "online",
    "offline": "offline",
    "reader": "Reader",
    "camera": "Camera",
    "audio": "Audio",
    "clock": "Clock",
    "circuit": "Upstream circuit",
    "circuit_closed": "closed",
    "circuit_open": "open",
    "backlog": "Journal backlog",
    "version": "Software",
    "last_seen": "Last heartbeat",
    "last_tap": "Last tap",
    "today": "Today",
    "recent": "Recent taps",
    "time": "Time",
    "masked_id": "ID (masked)",
    "outcome": "Outcome",
    "reasons": "Reasons",
    "offline_flag": "Offline",
    "yes": "yes",
    "no": "no",
    "ok": "ok",
    "fault": "fault",
    "absent": "not fitted",
    "trusted": "trusted",
    "untrusted": "not trusted",
    "unknown": "unknown",
    "none": "none",
    "no_kiosks": "No kiosks to show.",
    "open_gate": "Open the gate",
    "reason": "Reason (required)",
    "send": "Send",
    "gate_acked": "The kiosk acknowledged the gate opening",
    "failed": "Failed",
    "level": "Level",
    "kind": "Kind",
    "raised": "Raised",
    "note": "Note",
    "ack": "Acknowledge",
    "acked": "acknowledged",
    "no_alerts": "No alerts.",
    "id_number": "ID number",
    "phone": "Phone number",
    "search": "Look up",
    "recovery": "How to get back to a pass",
    "checks": "Checks",
    "filter": "Filter",
    "since": "Since",
    "until": "Until",
    "device": "Device",
    "more": "More",
    "export_csv": "Export CSV",
    "export_json": "Export JSON",
    "live": "live",
    "reconnecting": "reconnecting…",
    "pass": "pass",
    "check": "check",
    "nat_expired": "NAT expired",
    "invalid_credential": "invalid credential",
    "language": "中文",
}

TEXTS: Final[dict[Lang, dict[str, str]]] = {"zh-CN": ZH, "en": EN}


def chosen(request: web.Request) -> tuple[Lang, bool]:
    """The page's language and whether ``?lang=`` chose it now (so the cookie is set)."""
    asked = request.query.get("lang")
    if asked in ("en", "zh-CN", "zh"):
        return ("en" if asked == "en" else "zh-CN"), True
    return ("en" if request.cookies.get(COOKIE) == "en" else DEFAULT), False


def remember(response: web.StreamResponse, lang: Lang) -> None:
    """Keep the language for the next pages (a preference, not a secret)."""
    response.set_cookie(COOKIE, lang, max_age=365 * 86400, path="/", samesite="Strict")
