"""How a person gets back to a pass: one built-in text per reason code, zh-CN and English.

Every reason a decision can carry is here: the server's (core/policy.py ``decide``,
server/verify/service.py) and the kiosk's offline ones (device/deciding), which a guard reads
on the board's recent taps. A site's own colour reasons (``[policy.colours.<c>] reason``) have
no built-in text: a site configures one (:mod:`server.lookup.settings`) or the generic
:data:`FALLBACK` is shown. ``{nat_window_hours}`` and ``{min_doses}`` are filled in from the
site's policy, so a text never contradicts the numbers that decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

Lang = Literal["zh-CN", "en"]
LANGS: Final[tuple[Lang, ...]] = ("zh-CN", "en")
DEFAULT_LANG: Final[Lang] = "zh-CN"
#: The placeholders a recovery text may use.
PLACEHOLDERS: Final = ("nat_window_hours", "min_doses")

#: reason code → (zh-CN, English).
_TEXTS: Final[dict[str, tuple[str, str]]] = {
    # Credential (core.policy.decide invalid_reason; server.verify.service).
    "bad_checksum": (
        "证件号码校验位不符：请核对号码或重新刷证；证件损坏请到签发机关补办。",
        "The ID number's check character is wrong: re-enter the number or read the card "
        "again; a damaged card is replaced by the issuing office.",
    ),
    "unknown_qr": (
        "二维码无法识别或已过期：请刷新健康码后重新出示，或改刷身份证。",
        "The QR code is unknown or expired: refresh the health code and show it again, or "
        "use the ID card instead.",
    ),
    "unknown_person": (
        "各数据源均无此人记录：请人工核验身份，并引导其在健康码平台登记、完成核酸检测。",
        "No source has a record of this person: check their identity by hand and ask them "
        "to register with the health-code service and take a NAT.",
    ),
    # Health code.
    "code_missing": (
        "无健康码记录：请在当地健康码小程序申领健康码，领取后即可通行。",
        "No health code on record: apply for one in the local health-code app; once issued "
        "it passes.",
    ),
    "code_not_green": (
        "健康码非绿码：请按码上提示完成核酸检测或健康监测，转为绿码后即可通行；"
        "转码问题可拨打 12345 咨询。",
        "The health code is not green: follow the code's instructions (NAT, health "
        "monitoring); once it turns green it passes. Call 12345 about turning it green.",
    ),
    "code_colour_unknown": (
        "健康码颜色不在本场所颜色表中：请人工核验，并联系管理员更新颜色表。",
        "This health-code colour is not in the site's colour table: check by hand and ask "
        "an administrator to update the table.",
    ),
    "source_error:health_code": (
        "健康码数据暂时查不到：请查看本人手机上的健康码，稍后再查。",
        "The health-code source is unavailable: look at the code on the person's phone and "
        "look them up again later.",
    ),
    # Nucleic-acid test.
    "nat_missing": (
        "无核酸检测记录：请就近完成核酸检测，阴性结果出具后即可通行。",
        "No NAT on record: take a test nearby; once a negative result is out it passes.",
    ),
    "nat_expired": (
        "核酸检测结果已超过 {nat_window_hours} 小时：请就近重新检测，阴性结果出具后即可通行。",
        "The last negative NAT is older than {nat_window_hours} hours: take a new test; "
        "once the negative result is out it passes.",
    ),
    "nat_positive": (
        "核酸检测结果阳性：请勿放行，立即报告社区或疾控部门；按要求隔离治疗，"
        "解除管控并复检阴性后方可通行。",
        "The NAT is positive: do not let the person in and report to the community or CDC "
        "at once; after isolation ends and a new test is negative it passes.",
    ),
    "source_error:nat": (
        "核酸数据暂时查不到：请查看本人手机上的核酸记录，稍后再查。",
        "The NAT source is unavailable: look at the result on the person's phone and look "
        "them up again later.",
    ),
    # Vaccination.
    "doses_below_minimum": (
        "疫苗接种剂次不足（本场所要求至少 {min_doses} 剂）：请到接种点补种；"
        "有禁忌证者凭证明人工核验。",
        "Fewer vaccine doses than the {min_doses} this site requires: get the missing dose "
        "at a vaccination point; a person with a medical exemption is checked by hand.",
    ),
    "source_error:vaccination": (
        "疫苗接种数据暂时查不到：请查看本人的接种记录，稍后再查。",
        "The vaccination source is unavailable: look at the person's own record and look "
        "them up again later.",
    ),
    # Travel.
    "travel_flag": (
        "行程涉及中高风险地区：请按属地要求报备并完成核酸检测和健康监测，行程标记解除后即可通行。",
        "Travel through a risk area: report to the local authority and complete the "
        "required tests and monitoring; once the travel flag is lifted it passes.",
    ),
    "travel_missing": (
        "无行程记录：请本人在通信行程卡中授权查询，或人工核验行程。",
        "No travel record: ask the person to authorise the travel-card query, or check "
        "their travel by hand.",
    ),
    "source_error:travel": (
        "行程数据暂时查不到：请查看本人手机上的行程卡，稍后再查。",
        "The travel source is unavailable: look at the travel card on the person's phone and "
        "look them up again later.",
    ),
    # The kiosk's offline decisions (device/deciding): nothing the person can do.
    "clock_untrusted": (
        "闸机时钟不可信，离线时无法判定时效：请人工核验，并联系运维校准时间。",
        "The kiosk's clock is not trusted, so it cannot judge ages offline: check by hand "
        "and ask maintenance to fix the clock.",
    ),
    "cache_unavailable": (
        "闸机离线且无本地数据：请人工核验，并联系运维恢复网络。",
        "The kiosk is offline without local data: check by hand and ask maintenance to "
        "restore the network.",
    ),
    "cache_corrupt": (
        "闸机本地数据损坏：请人工核验，并联系运维重新下发数据。",
        "The kiosk's local data is damaged: check by hand and ask maintenance to reload it.",
    ),
}

#: Every reason code with a built-in text.
REASONS: Final[frozenset[str]] = frozenset(_TEXTS)

#: Built-in texts per language: language → reason → text.
DEFAULTS: Final[Mapping[Lang, Mapping[str, str]]] = MappingProxyType(
    {
        lang: MappingProxyType({reason: pair[i] for reason, pair in _TEXTS.items()})
        for i, lang in enumerate(LANGS)
    }
)

#: Shown for a reason nobody wrote a text for (a site's own colour reason, say).
FALLBACK: Final[Mapping[Lang, str]] = MappingProxyType(
    {
        "zh-CN": "请人工核验，并按现场负责人的要求处理。",
        "en": "Check by hand and follow the site lead's instructions.",
    }
)
