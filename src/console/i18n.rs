//! The console's words in Chinese (the default) and English. Templates read them as
//! `tr.<key>`; Rust code through [`Lang::text`].

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// `zh` or `en`; anything else is Chinese.
    pub fn parse(text: &str) -> Lang {
        if text.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            Lang::Zh
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The text of `key`, or the key itself if there is none (visible, never a panic).
    pub fn text(self, key: &str) -> &'static str {
        TEXTS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or("?", |(_, zh, en)| if self == Lang::Zh { zh } else { en })
    }

    /// Every text, for the templates.
    pub fn table(self) -> BTreeMap<&'static str, &'static str> {
        TEXTS
            .iter()
            .map(|(k, zh, en)| (*k, if self == Lang::Zh { *zh } else { *en }))
            .collect()
    }
}

/// (key, 中文, English)
const TEXTS: &[(&str, &str, &str)] = &[
    ("app", "城管机器人 · 指挥中心", "cgbot · operations centre"),
    ("nav_cases", "案件审核", "Review"),
    ("nav_cameras", "摄像头", "Cameras"),
    ("nav_stats", "统计", "Statistics"),
    ("other_language", "English", "中文"),
    ("role_operator", "操作员", "operator"),
    ("role_admin", "管理员", "admin"),
    ("sign_in", "登录", "Sign in"),
    ("sign_out", "退出", "Sign out"),
    ("bad_sign_in", "用户名、密码或令牌不正确", "wrong user name, password or token"),
    ("user_name", "用户名", "User name"),
    ("password", "密码", "Password"),
    ("or_token", "或使用 API 令牌登录", "or sign in with the API token"),
    ("api_token", "API 令牌", "API token"),
    ("camera_file_error", "摄像头配置文件有误，仍显示上一版", "camera file error, showing the previous version"),
    ("status", "状态", "Status"),
    ("open_cases", "待处理", "Open"),
    ("all", "全部", "All"),
    ("event", "事件", "Event"),
    ("camera", "摄像头", "Camera"),
    ("from_date", "从", "From"),
    ("to_date", "到", "To"),
    ("overdue_only", "仅超期", "Overdue only"),
    ("filter", "筛选", "Filter"),
    ("queue_keys", "快捷键：j/k 上下移动，x 选中，c 确认，r 驳回（误报），Enter 打开", "Keys: j/k move, x select, c confirm, r reject (false positive), Enter open"),
    ("selected", "已选", "Selected"),
    ("confirm", "确认", "Confirm"),
    ("reject", "驳回（误报）", "Reject (false positive)"),
    ("total", "共", "Total"),
    ("picture", "画面", "Picture"),
    ("case", "案件", "Case"),
    ("first_seen", "首次发现", "First seen"),
    ("last_seen", "最近发现", "Last seen"),
    ("deadline", "处置时限", "Deadline"),
    ("verdict", "审核结论", "Verdict"),
    ("overdue", "超期", "Overdue"),
    ("no_cases", "没有符合条件的案件", "No cases match"),
    ("previous", "上一页", "Previous"),
    ("next", "下一页", "Next"),
    ("no_evidence", "没有证据图片", "No evidence images"),
    ("zone", "区域", "Zone"),
    ("address", "地址", "Address"),
    ("grid", "网格", "Grid"),
    ("filed_at", "立案时间", "Filed"),
    ("closed_at", "结案时间", "Closed"),
    ("object", "目标", "Object"),
    ("dwell", "停留", "dwell"),
    ("time_zone", "时区", "Time zone"),
    ("note", "备注", "Note"),
    ("history", "处理记录", "History"),
    ("time", "时间", "Time"),
    ("change", "变更", "Change"),
    ("actor", "操作人", "By"),
    ("state", "状态", "State"),
    ("no_zones_only", "仅未划区域", "No zones yet only"),
    ("search", "搜索", "Search"),
    ("last_frame", "最新画面", "Last frame"),
    ("revisit", "轮巡间隔", "Revisit"),
    ("replica", "副本", "Replica"),
    ("zones", "区域", "Zones"),
    ("last_error", "最近错误", "Last error"),
    ("no_zones_yet", "未划区域", "no zones yet"),
    ("view_likeness", "与参考画面相似度", "Likeness to the reference view"),
    ("rebase_view", "设当前画面为参考画面", "Make this picture the reference view"),
    ("rebase_confirm", "以当前画面作为本摄像头的参考画面？此后的画面都与它比较；区域应按此画面划定。", "Make the current picture this camera's reference view? Later pictures are compared with it; the zones should fit this picture."),
    ("rebased", "已设为参考画面", "Reference view set"),
    ("view_help", "球机被转动或变焦后，画面与参考画面不符，摄像头停止立案和核查（画面已变）；转回预置位后自动恢复。若摄像头已长期改变朝向，请按新画面重划区域并设为参考画面。", "When a dome camera is turned or zoomed away from its reference view, it stops filing and verifying cases (view changed) until it returns to its preset. If it was turned for good, redraw the zones on the new picture and make it the reference view."),
    ("suppressions", "误报屏蔽", "Suppressions"),
    ("no_cameras", "没有摄像头", "No cameras"),
    ("editor_help", "点击画面添加顶点；拖动顶点移动；双击顶点删除。绿框为当前检测，加粗的会被计入。", "Click the picture to add a vertex, drag a vertex to move it, double-click it to delete it. Green boxes are the current detections; bold ones would count."),
    ("add_zone", "新增区域", "Add zone"),
    ("preview", "预览", "Preview"),
    ("save", "保存", "Save"),
    ("by", "操作人", "By"),
    ("until", "截止", "Until"),
    ("hits", "屏蔽次数", "Hits"),
    ("lift", "解除", "Lift"),
    ("lifted", "已解除", "lifted"),
    ("expired", "已过期", "expired"),
    ("no_suppressions", "没有误报屏蔽", "No suppressions"),
    ("show", "查看", "Show"),
    ("export_xlsx", "导出 Excel", "Export to Excel"),
    ("days_note", "日期按摄像头当地时间", "Days in the cameras' local time"),
    ("found", "发现问题", "Found"),
    ("filed", "立案", "Filed"),
    ("closed", "结案", "Closed"),
    ("rejected", "驳回（误报）", "Rejected"),
    ("closed_auto", "自动核查结案", "Auto-verified closes"),
    ("closed_operator", "人工结案", "Manual closes"),
    ("funnel", "发现 → 立案 → 结案", "Found → filed → closed"),
    ("by_day", "每日立案（按类别）", "Filed per day (by category)"),
    ("precision", "各事件误报率（来自审核结论）", "False-positive rate per event (operators' verdicts)"),
    ("confirmed", "确认", "Confirmed"),
    ("fp_rate", "误报率", "False-positive rate"),
    ("no_verdicts", "还没有审核结论", "No verdicts yet"),
    ("by_category", "按日期和类别", "By day and category"),
    ("day", "日期", "Day"),
    ("category", "类别", "Category"),
    ("overdue_cases", "超期案件", "Overdue cases"),
    ("none_overdue", "没有超期案件", "No overdue cases"),
    ("done_count", "已处理 {n} 件", "{n} cases updated"),
    ("editor_offline", "未配置摄像头文件，不能编辑区域（cgbot console --cameras DIR）", "No camera files configured: zones cannot be edited (cgbot console --cameras DIR)"),
    ("editor_admin_only", "只有管理员可以编辑区域", "Only admins can edit zones"),
    ("picture_live", "画面：守护进程最近分析的一帧", "Picture: the daemon's latest analysed frame"),
    ("picture_evidence", "画面：该摄像头最近的证据图片（无实时画面）", "Picture: the camera's latest evidence image (no live picture)"),
    ("no_picture", "暂无画面", "No picture yet"),
    ("picture_none", "还没有画面：摄像头连接并分析后显示", "No picture yet: it appears once the camera is analysed"),
    ("not_camera", "不在摄像头配置中", "not in the camera files"),
    // Statuses
    ("status_detected", "候选", "candidate"),
    ("status_filed", "已立案", "filed"),
    ("status_dispatched", "已派遣", "dispatched"),
    ("status_handled", "已处置", "handled"),
    ("status_verifying", "核查中", "verifying"),
    ("status_closed", "已结案", "closed"),
    ("status_reopened", "已重开", "reopened"),
    ("status_rejected", "已驳回（误报）", "rejected"),
    // Reasons for a rejection
    ("reason_not_a_violation", "不构成违规", "not a violation"),
    ("reason_wrong_class", "识别类别错误", "wrong class"),
    ("reason_duplicate", "重复案件", "duplicate"),
    ("verdict_confirmed", "已确认", "confirmed"),
    ("verdict_rejected", "已驳回", "rejected"),
    // Camera states
    ("state_connecting", "连接中", "connecting"),
    ("state_streaming", "在线", "streaming"),
    ("state_backoff", "重连等待", "backoff"),
    ("state_failed", "故障", "failed"),
    ("state_waiting", "轮巡等待", "waiting"),
    ("state_elsewhere", "其他副本", "on another replica"),
    ("state_stopped", "未监看", "stopped"),
    // Camera problems (the same `state_` keys: one filter takes both)
    ("state_refused", "连接被拒", "refused"),
    ("state_unauthorized", "认证失败", "unauthorized"),
    ("state_not_found", "地址不存在", "not found"),
    ("state_timeout", "连接超时", "timeout"),
    ("state_stalled", "无画面", "stalled"),
    ("state_disconnected", "连接中断", "disconnected"),
    ("state_error", "协议错误", "stream error"),
    ("state_misconfigured", "配置错误", "misconfigured"),
    ("state_frozen", "画面冻结", "frozen picture"),
    ("state_dark", "黑屏/遮挡", "dark or covered"),
    ("state_view_changed", "视角已变（规则暂停）", "view changed (rules paused)"),
    // Evidence images
    ("evidence_first", "首次发现", "first sighting"),
    ("evidence_first-crop", "首次发现（特写）", "first sighting (close-up)"),
    ("evidence_filed", "立案", "filing"),
    ("evidence_filed-crop", "立案（特写）", "filing (close-up)"),
    ("evidence_reopened", "重开", "reopened"),
    ("evidence_reopened-crop", "重开（特写）", "reopened (close-up)"),
    ("evidence_after", "处置后", "after"),
    // Zone editor (zones.js)
    ("zone_id", "区域编号", "Zone id"),
    ("zone_name", "区域名称", "Zone name"),
    ("events", "事件", "Events"),
    ("min_dwell", "最短停留", "Min dwell"),
    ("active_hours", "生效时段", "Active hours"),
    ("min_confidence", "最低置信度", "Min confidence"),
    ("delete_zone", "删除区域", "Delete zone"),
    ("select_zone", "编辑", "Edit"),
    ("saved", "已保存，守护进程将在几秒内应用", "Saved; the daemon applies it within seconds"),
    ("would_count", "当前会被计入的检测", "Detections that would count now"),
    ("placeholder_dwell", "如 180s", "e.g. 180s"),
    ("placeholder_hours", "如 07:00-20:00", "e.g. 07:00-20:00"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_unique_and_translated() {
        let mut keys = std::collections::HashSet::new();
        for (key, zh, en) in TEXTS {
            assert!(keys.insert(key), "{key} twice");
            assert!(!zh.is_empty() && !en.is_empty(), "{key}");
        }
        assert_eq!(Lang::parse("en").text("confirm"), "Confirm");
        assert_eq!(Lang::parse("zh-CN").text("confirm"), "确认");
    }

    #[test]
    fn every_camera_state_and_problem_has_a_name() {
        for condition in crate::api::CameraCondition::all() {
            let key = format!("state_{}", condition.as_str());
            for lang in [Lang::Zh, Lang::En] {
                assert_ne!(lang.text(&key), "?", "{key}");
            }
        }
    }
}
