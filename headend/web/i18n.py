"""The console's labels in Simplified Chinese (the default) and English, chosen per browser."""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

_LABELS: dict[str, tuple[str, str]] = {  # key: (zh, en)
    "app": ("主站控制台", "Head-end console"),
    "overview": ("总览", "Overview"),
    "meters": ("电表", "Meters"),
    "meter": ("电表", "Meter"),
    "commands": ("控制命令", "Commands"),
    "command": ("命令", "Command"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "operator_id": ("工号", "Operator id"),
    "password": ("密码", "Password"),
    "signed_in_as": ("当前操作员", "Signed in as"),
    "roles": ("角色", "Roles"),
    "collection_today": ("今日采集成功率", "Collection success today"),
    "channel": ("通道", "Channel"),
    "meter_count": ("电表数", "Meters"),
    "read": ("已采集", "Read"),
    "rate": ("成功率", "Rate"),
    "not_read_today": ("今日未采集电表", "Meters not read today"),
    "reason": ("原因", "Reason"),
    "fee_control": ("费控状态", "Fee control"),
    "halted": ("自动断电已暂停", "Automatic disconnection halted"),
    "running": ("正常运行", "Running"),
    "in_flight": ("执行中的命令", "Commands in flight"),
    "awaiting_approval": ("待审批", "Awaiting approval"),
    "open_holds": ("未处理的 VEE 挂起", "Open VEE holds"),
    "none": ("无", "None"),
    "identity": ("档案", "Identity"),
    "name": ("名称", "Name"),
    "address": ("通信地址", "Address"),
    "protocol": ("规约", "Protocol"),
    "model": ("型号", "Model"),
    "account": ("户号", "Account"),
    "enabled": ("启用", "Enabled"),
    "last_read": ("最近成功采集", "Last read"),
    "last_contact": ("最近通信", "Last contact"),
    "relay": ("继电器", "Relay"),
    "relay_open": ("断开", "open"),
    "relay_closed": ("闭合", "closed"),
    "relay_unknown": ("未知（无已确认命令）", "unknown (no confirmed command)"),
    "relay_none": ("无继电器", "none"),
    "clock_offset": ("时钟偏差（秒）", "Clock offset (s)"),
    "latest_readings": ("最新读数", "Latest readings"),
    "quantity": ("数据项", "Quantity"),
    "time": ("时间", "Time"),
    "value": ("数值", "Value"),
    "unit": ("单位", "Unit"),
    "quality": ("质量", "Quality"),
    "load_curve": ("负荷曲线", "Load curve"),
    "day": ("日期", "Day"),
    "show": ("显示", "Show"),
    "daily_consumption": ("日用电量", "Daily consumption"),
    "events": ("事件", "Events"),
    "category": ("类别", "Category"),
    "kind": ("类型", "Kind"),
    "details": ("详情", "Details"),
    "command_history": ("命令记录", "Command history"),
    "action": ("动作", "Action"),
    "state": ("状态", "State"),
    "cause": ("来源", "Cause"),
    "created": ("创建时间", "Created"),
    "finished": ("完成时间", "Finished"),
    "approved_by": ("审批人", "Approved by"),
    "error": ("错误", "Error"),
    "evidence": ("回读证据", "Read-back evidence"),
    "disconnect": ("拉闸", "Disconnect"),
    "reconnect": ("合闸", "Reconnect"),
    "create_command": ("新建命令", "Create command"),
    "approve": ("审批通过", "Approve"),
    "cancel": ("撤销", "Cancel"),
    "filter": ("筛选", "Filter"),
    "all": ("全部", "All"),
    "on_demand": ("点抄 / 补抄", "Read now / re-collect"),
    "on_demand_later": ("点抄和补抄将在此处提供。", "Read now and re-collect will be offered here."),
    "no_data": ("无数据", "No data"),
    "kw": ("平均功率 kW", "Average demand kW"),
    "kwh": ("kWh", "kWh"),
    "points": ("个数据点", "data points"),
    "audit": ("审计记录", "Audit trail"),
    "actor": ("操作人", "Actor"),
    "language": ("English", "中文"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "forbidden": ("无权限", "Not allowed"),
    "not_found": ("未找到", "Not found"),
    "refused": ("操作被拒绝", "Refused"),
    "channel_disabled": ("通道停用", "channel disabled"),
    "quarantined": ("隔离中", "quarantined"),
    "held": ("VEE 挂起", "held (VEE)"),
    "no_reply": ("无应答", "no reply"),
    "not_read_yet": ("尚未采集", "not read yet"),
    "pending": ("待执行", "pending"),
    "sent": ("已下发", "sent"),
    "confirmed": ("已确认", "confirmed"),
    "failed": ("失败", "failed"),
    "cancelled": ("已撤销", "cancelled"),
    "expired": ("已过期", "expired"),
    "waits_for_approval": ("等待另一名审批员审批", "waits for another operator's approval"),
}


def translator(language: str) -> Callable[[str], str]:
    """``t(key)``: the label in ``language`` (an unknown key is shown as itself)."""
    index = 0 if language != "en" else 1

    def t(key: str) -> str:
        pair = _LABELS.get(key)
        return key if pair is None else pair[index]

    return t


def chosen(cookie: str | None) -> str:
    """The language a browser chose (cookie), else the default."""
    return cookie if cookie in LANGUAGES else DEFAULT
