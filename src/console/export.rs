//! Cases of a period as an Excel workbook that opens correctly on a Chinese desktop:
//! Chinese headers, local times, and codes (20-digit device codes, 12-digit grid codes,
//! category codes) written as text cells so Excel never turns them into `3.30102E+19`.

use rust_xlsxwriter::{Format, Workbook, XlsxError};

use super::book::Loaded;
use super::i18n::Lang;
use crate::cases::Case;
use crate::local_time::local_time;

/// (中文, English) column headers, in order.
const COLUMNS: [(&str, &str); 23] = [
    ("案件编号", "Case"),
    ("状态", "Status"),
    ("类别代码", "Category code"),
    ("大类", "Major category"),
    ("小类", "Category"),
    ("摄像头编号", "Camera id"),
    ("摄像头名称", "Camera name"),
    ("地址", "Address"),
    ("网格编码", "Grid code"),
    ("经度", "Longitude"),
    ("纬度", "Latitude"),
    ("区域", "Zone"),
    ("首次发现", "First seen"),
    ("立案时间", "Filed"),
    ("处置时限", "Deadline"),
    ("是否超期", "Overdue"),
    ("结案时间", "Closed"),
    ("结案方式", "Closed by"),
    ("审核结论", "Verdict"),
    ("驳回原因", "Reject reason"),
    ("审核人", "Reviewer"),
    ("备注", "Note"),
    ("证据图片", "Evidence"),
];

/// One cell of a case's row: codes and names stay text (so Excel never turns a device
/// code into a number); only coordinates are numbers.
enum Cell {
    Text(String),
    Number(Option<f64>),
}

/// The workbook's bytes; `base_url` makes the evidence links absolute.
pub fn workbook(
    cases: &[Case],
    cameras: &Loaded,
    lang: Lang,
    base_url: &str,
    now: f64,
) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name(if lang == Lang::Zh { "案件" } else { "Cases" })?;
    let bold = Format::new().set_bold();
    for (col, (zh, en)) in COLUMNS.iter().enumerate() {
        let header = if lang == Lang::Zh { zh } else { en };
        sheet.write_string_with_format(0, col as u16, *header, &bold)?;
    }
    let yes_no = |b: bool| match (lang, b) {
        (Lang::Zh, true) => "是",
        (Lang::Zh, false) => "否",
        (Lang::En, true) => "yes",
        (Lang::En, false) => "no",
    };
    for (i, case) in cases.iter().enumerate() {
        let row = i as u32 + 1;
        let offset = cameras.utc_offset(&case.camera_id);
        let time = |t: Option<f64>| t.map(|t| local_time(t, offset)).unwrap_or_default();
        let status = lang.text(&format!("status_{}", case.status.as_str()));
        let verdict = case.verdict.as_ref();
        let text = |t: String| Cell::Text(t);
        let cells: [Cell; 22] = [
            text(case.id.clone()),
            text(status.to_string()),
            text(case.category.code.clone()),
            text(case.category.major.clone()),
            text(case.category.name.clone()),
            text(case.camera_id.clone()),
            text(case.camera_name.clone()),
            text(case.location.address.clone().unwrap_or_default()),
            text(case.location.grid.clone().unwrap_or_default()),
            Cell::Number(case.location.longitude),
            Cell::Number(case.location.latitude),
            text(case.zone_name.clone()),
            text(local_time(case.first_seen, offset)),
            text(time(case.filed_at)),
            text(time(case.deadline)),
            text(yes_no(case.is_overdue(now)).to_string()),
            text(time(case.closed_at)),
            text(case.close_reason.clone().unwrap_or_default()),
            text(
                verdict
                    .map(|v| {
                        lang.text(&format!("verdict_{}", v.kind.as_str()))
                            .to_string()
                    })
                    .unwrap_or_default(),
            ),
            text(
                verdict
                    .and_then(|v| v.reason)
                    .map(|r| lang.text(&format!("reason_{}", r.as_str())).to_string())
                    .unwrap_or_default(),
            ),
            text(verdict.map(|v| v.by.clone()).unwrap_or_default()),
            text(verdict.and_then(|v| v.note.clone()).unwrap_or_default()),
        ];
        for (col, cell) in cells.iter().enumerate() {
            match cell {
                Cell::Text(t) => sheet.write_string(row, col as u16, t)?,
                Cell::Number(Some(v)) => sheet.write_number(row, col as u16, *v)?,
                Cell::Number(None) => continue,
            };
        }
        let url = format!("{base_url}/cases/{}", case.id);
        sheet.write_url_with_text(row, 22, url.as_str(), &url)?;
    }
    for (col, width) in [
        (0u16, 20.0),
        (5, 24.0),
        (6, 24.0),
        (7, 28.0),
        (8, 16.0),
        (22, 40.0),
    ] {
        sheet.set_column_width(col, width)?;
    }
    for col in [12u16, 13, 14, 16] {
        sheet.set_column_width(col, 20.0)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    book.save_to_buffer()
}
