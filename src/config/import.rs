//! A city's camera point list (点位表) turned into a camera file.
//!
//! Cities hand their camera lists over as spreadsheets saved as CSV: UTF-8 with a BOM
//! ("CSV UTF-8" in Excel) or GBK (plain "CSV" on a Chinese Windows), headed in Chinese or
//! English, with codes that Excel may have rounded into scientific notation. The import
//! reads UTF-8 only (with or without a BOM) and says how to convert anything else; it
//! finds its columns by any of their usual headers, and names every bad cell by its
//! spreadsheet row and column, so that the operator can fix the spreadsheet itself.
//!
//! Cameras start with no zones: connected and shown to operators, they file nothing until
//! zones are drawn on their picture (a whole-picture zone watching every event filed the
//! bus and van passing each unrefined camera). `--default-zone` still gives each new camera
//! a whole-picture zone watching chosen events.
//!
//! A new quarter's list is merged into the camera file in use ([`merge_import`]): cameras
//! that stay keep their zones, settings, comments and hand edits, and take from the list
//! only what it carries (name, streams, location, priority); cameras no longer listed are
//! dropped and new ones added.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::file::{self, FileError};
use super::zones::{zone_table, RuleSpec, ZoneSpec};
use crate::redact::redact_url;
use crate::rules::{EventCatalogue, RuleFields};

/// Bad rows an error or a skip report lists before summing up the rest.
const LISTED_ROWS: usize = 50;

/// The zone `--default-zone` gives every new camera.
const WHOLE_FRAME_ZONE: &str = "whole-frame";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file as a whole cannot be used: unreadable, not UTF-8, no id column, no rows.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: {}", list_bad_rows(.rows))]
    BadRows { path: PathBuf, rows: Vec<BadRow> },
    /// The events asked for: none, or one not in the catalogue.
    #[error("default zone: {0}")]
    Rules(String),
}

impl From<FileError> for ImportError {
    fn from(e: FileError) -> Self {
        ImportError::File {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// A row of the point list that cannot become a camera.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    /// As a spreadsheet numbers it: the header is row 1.
    pub row: usize,
    pub cells: Vec<BadCell>,
}

/// What is wrong with one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct BadCell {
    /// 1-based: column 1 is the spreadsheet's column A.
    pub column: usize,
    /// The column's header, as written in the file.
    pub header: String,
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {}", self.row)?;
        for cell in &self.cells {
            write!(
                f,
                ", column {} `{}`: {}",
                column_letters(cell.column),
                cell.header,
                cell.reason
            )?;
        }
        Ok(())
    }
}

/// `N bad rows:` and one line per row, at most [`LISTED_ROWS`] of them.
pub fn list_bad_rows(rows: &[BadRow]) -> String {
    let mut text = format!(
        "{} bad row{}:",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    for row in rows.iter().take(LISTED_ROWS) {
        text.push_str(&format!("\n  {row}"));
    }
    if rows.len() > LISTED_ROWS {
        text.push_str(&format!("\n  … and {} more", rows.len() - LISTED_ROWS));
    }
    text
}

/// Spreadsheet column letters: 1 → A, 26 → Z, 27 → AA.
fn column_letters(mut column: usize) -> String {
    let mut letters = Vec::new();
    while column > 0 {
        column -= 1;
        letters.push(b'A' + (column % 26) as u8);
        column /= 26;
    }
    letters.reverse();
    String::from_utf8(letters).expect("ASCII letters")
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Give each new camera a whole-picture zone watching these events (`all`: every
    /// event of the catalogue); `None`: new cameras start with no zones.
    pub default_zone: Option<Vec<String>>,
    /// Leave bad rows out (see [`Imported::skipped`]) instead of failing.
    pub skip_invalid: bool,
}

/// A camera file made from a point list.
#[derive(Debug, Clone)]
pub struct Imported {
    /// A new camera file of the list, as [`load_cameras`](super::load_cameras) reads it.
    pub toml: String,
    pub cameras: usize,
    /// The events the whole-picture zone of each new camera watches; empty: new cameras
    /// have no zones.
    pub rules: Vec<String>,
    /// Rows left out under [`ImportOptions::skip_invalid`].
    pub skipped: Vec<BadRow>,
    /// Columns not used, as headed in the file, with the reason when another column
    /// gives the same field.
    pub ignored_columns: Vec<String>,
    points: Vec<Point>,
    /// The point list it was made of.
    source: PathBuf,
    /// The fields the list has a column for, in [`Field::ALL`] order: a field it has no
    /// column for is left as the camera file has it when merging.
    given: [bool; Field::ALL.len()],
}

impl Imported {
    /// Moves the user names and passwords of the cameras' stream URLs into `secrets`, as
    /// `[credentials.<camera id>]`, and has each such camera reference its entry
    /// (`credentials = "<camera id>"`) instead: the camera file then holds no password.
    /// Cameras whose URLs carry no password are left as they are. Returns how many
    /// cameras' credentials moved; fails for a camera whose main and sub streams carry
    /// different credentials.
    pub fn move_credentials(
        &mut self,
        secrets: &mut super::SecretsFile,
    ) -> Result<usize, ImportError> {
        let mut moved = 0;
        for point in &mut self.points {
            let (main, main_info) = super::secrets::split_userinfo(&point.main_stream);
            let sub = point
                .sub_stream
                .as_deref()
                .map(super::secrets::split_userinfo);
            let has_password = |info: &Option<(String, Option<String>)>| {
                info.as_ref().is_some_and(|i| i.1.is_some())
            };
            let sub_info = sub.as_ref().and_then(|(_, info)| info.clone());
            if !has_password(&main_info) && !has_password(&sub_info) {
                continue;
            }
            if sub.is_some() && main_info != sub_info {
                return Err(ImportError::File {
                    path: self.source.clone(),
                    reason: format!(
                        "camera `{}`: main and sub streams carry different credentials; \
                         one camera has one credential in a secrets file",
                        point.id
                    ),
                });
            }
            let (user, password) = main_info.or(sub_info).expect("a password");
            secrets.credentials.insert(
                point.id.clone(),
                super::Credential {
                    user: Some(user),
                    password: password.unwrap_or_default(),
                },
            );
            point.main_stream = main;
            point.sub_stream = sub.map(|(url, _)| url);
            point.credentials = Some(point.id.clone());
            moved += 1;
        }
        self.toml = camera_file(&self.source, &self.points, &self.rules);
        Ok(moved)
    }
}

/// Writes `secrets` to `path`, merged into the secrets file there (entries of the same
/// name replaced); a new file is made readable by its owner alone (0600).
pub fn write_secrets(path: &Path, secrets: &super::SecretsFile) -> Result<(), ImportError> {
    let error = |reason: String| ImportError::File {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = if path.exists() {
        super::read_secrets_file(path).map_err(error)?
    } else {
        super::SecretsFile::default()
    };
    file.credentials.extend(secrets.credentials.clone());
    super::secrets::write_secrets_file(path, &file).map_err(error)
}

/// What merging a point list into a camera file did.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The camera file after the merge.
    pub toml: String,
    /// Cameras in both: their zones and settings stay, the list's fields are updated.
    pub kept: usize,
    /// Ids of the cameras only in the list, in list order.
    pub added: Vec<String>,
    /// Ids of the cameras only in the file, in file order.
    pub removed: Vec<String>,
}

/// One camera of the point list.
#[derive(Debug, Clone)]
struct Point {
    id: String,
    name: Option<String>,
    main_stream: String,
    sub_stream: Option<String>,
    coordinates: Option<(f64, f64)>,
    address: Option<String>,
    grid: Option<String>,
    priority: bool,
    /// The name of its credentials in a secrets file, once moved out of its stream URLs.
    credentials: Option<String>,
}

/// The fields a point list may give, in camera-file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Name,
    MainStream,
    SubStream,
    Longitude,
    Latitude,
    Address,
    Grid,
    Priority,
}

impl Field {
    const ALL: [Field; 9] = [
        Field::Id,
        Field::Name,
        Field::MainStream,
        Field::SubStream,
        Field::Longitude,
        Field::Latitude,
        Field::Address,
        Field::Grid,
        Field::Priority,
    ];

    /// Headers that mean this field (in any case), preferred first: when a list has two
    /// of them (设备编码 and a serial 编号), the earlier one is used.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Field::Id => &["设备编码", "点位编号", "编号", "camera_id", "id"],
            Field::Name => &["点位名称", "设备名称", "名称", "name"],
            Field::MainStream => &[
                "rtsp地址",
                "取流地址",
                "主码流",
                "main_stream",
                "rtsp",
                "url",
            ],
            Field::SubStream => &["子码流", "sub_stream"],
            Field::Longitude => &["经度", "lon", "longitude"],
            Field::Latitude => &["纬度", "lat", "latitude"],
            Field::Address => &["安装地址", "地址", "address"],
            Field::Grid => &["网格编码", "单元网格", "grid"],
            Field::Priority => &["重点", "priority"],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Field::Id => "the camera id",
            Field::Name => "the name",
            Field::MainStream => "the main stream",
            Field::SubStream => "the sub stream",
            Field::Longitude => "the longitude",
            Field::Latitude => "the latitude",
            Field::Address => "the address",
            Field::Grid => "the grid cell",
            Field::Priority => "the priority",
        }
    }
}

/// Which column gives each field, from the header row.
struct Columns {
    /// Column index (0-based) per field, in [`Field::ALL`] order.
    index: [Option<usize>; Field::ALL.len()],
    headers: Vec<String>,
}

impl Columns {
    fn new(headers: &csv::StringRecord) -> (Columns, Vec<String>) {
        let headers: Vec<String> = headers.iter().map(|h| h.trim().to_string()).collect();
        // (preference, column) of the best header seen so far, per field.
        let mut best: [Option<(usize, usize)>; Field::ALL.len()] = Default::default();
        let mut matched = vec![None; headers.len()];
        for (column, header) in headers.iter().enumerate() {
            let lower = header.to_lowercase();
            for (fi, field) in Field::ALL.iter().enumerate() {
                if let Some(rank) = field
                    .headers()
                    .iter()
                    .position(|h| h.to_lowercase() == lower)
                {
                    matched[column] = Some(fi);
                    if best[fi].is_none_or(|(r, _)| rank < r) {
                        best[fi] = Some((rank, column));
                    }
                }
            }
        }
        let index = best.map(|b| b.map(|(_, column)| column));
        let ignored = headers
            .iter()
            .enumerate()
            .filter(|(column, header)| !header.is_empty() && !index.contains(&Some(*column)))
            .map(|(column, header)| match matched[column] {
                Some(fi) => format!(
                    "{header} ({} gives {})",
                    headers[index[fi].expect("a matched field has a column")],
                    Field::ALL[fi].describe()
                ),
                None => header.clone(),
            })
            .collect();
        (Columns { index, headers }, ignored)
    }

    fn column(&self, field: Field) -> Option<usize> {
        self.index[field as usize]
    }

    /// The trimmed cell of `field` in `record` with its column; `None` if the list has no
    /// such column.
    fn cell<'r>(&self, record: &'r csv::StringRecord, field: Field) -> Option<Cell<'r>> {
        self.column(field).map(|column| Cell {
            column,
            value: record.get(column).unwrap_or("").trim(),
        })
    }

    fn bad(&self, cell: &Cell, reason: String) -> BadCell {
        BadCell {
            column: cell.column + 1,
            header: self.headers[cell.column].clone(),
            reason,
        }
    }
}

struct Cell<'r> {
    column: usize,
    value: &'r str,
}

/// One good row, ready to write.
struct Row<'r> {
    id: &'r str,
    name: Option<&'r str>,
    main_stream: &'r str,
    sub_stream: Option<&'r str>,
    coordinates: Option<(f64, f64)>,
    address: Option<&'r str>,
    grid: Option<&'r str>,
    priority: bool,
}

/// Reads a point list and makes a camera file of it.
pub fn import_csv(
    path: &Path,
    events: &EventCatalogue,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    import_bytes(path, &bytes, events, options)
}

fn import_bytes(
    path: &Path,
    bytes: &[u8],
    events: &EventCatalogue,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let rules = chosen_rules(events, options.default_zone.as_deref())?;
    let file_error = |reason: String| ImportError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = utf8(path, bytes).map_err(file_error)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| file_error(e.to_string()))?
        .clone();
    let (columns, ignored_columns) = Columns::new(&header);
    let missing = |field: Field| {
        file_error(format!(
            "no column gives {} (headed one of: {}; found: {})",
            field.describe(),
            field.headers().join(", "),
            columns.headers.join(", ")
        ))
    };
    for field in [Field::Id, Field::MainStream] {
        if columns.column(field).is_none() {
            return Err(missing(field));
        }
    }
    match (
        columns.column(Field::Longitude),
        columns.column(Field::Latitude),
    ) {
        (Some(_), None) => return Err(missing(Field::Latitude)),
        (None, Some(_)) => return Err(missing(Field::Longitude)),
        _ => {}
    }

    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    let mut first_row_of_id: HashMap<&str, usize> = HashMap::new();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (record, row) in records
        .iter()
        .zip(spreadsheet_rows(text, &header, &records))
    {
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        match check_row(&columns, record, row, &mut first_row_of_id) {
            Ok(camera) => good.push(camera),
            Err(cells) => bad.push(BadRow { row, cells }),
        }
    }
    if !bad.is_empty() && (!options.skip_invalid || good.is_empty()) {
        return Err(ImportError::BadRows {
            path: path.to_path_buf(),
            rows: bad,
        });
    }
    if good.is_empty() {
        return Err(file_error("no camera rows below the header".into()));
    }
    let points: Vec<Point> = good.iter().map(Row::to_point).collect();
    let given = Field::ALL.map(|field| columns.column(field).is_some());
    Ok(Imported {
        toml: camera_file(path, &points, &rules),
        source: path.to_path_buf(),
        cameras: good.len(),
        rules,
        skipped: bad,
        ignored_columns,
        points,
        given,
    })
}

/// The events of the default zone, checked against the catalogue, each once; none without
/// a default zone.
fn chosen_rules(
    events: &EventCatalogue,
    chosen: Option<&[String]>,
) -> Result<Vec<String>, ImportError> {
    let Some(chosen) = chosen else {
        return Ok(Vec::new());
    };
    if let [all] = chosen {
        if all.trim() == "all" {
            return Ok(events.names().into_iter().map(String::from).collect());
        }
    }
    let mut rules: Vec<String> = Vec::new();
    for event in chosen.iter().map(|e| e.trim()) {
        events
            .resolve(event, &RuleFields::default())
            .map_err(ImportError::Rules)?;
        if !rules.iter().any(|r| r == event) {
            rules.push(event.to_string());
        }
    }
    if rules.is_empty() {
        return Err(ImportError::Rules("name at least one event".to_string()));
    }
    Ok(rules)
}

/// The text of a UTF-8 file without its BOM; anything else is refused with a way to
/// convert it.
fn utf8<'b>(path: &Path, bytes: &'b [u8]) -> Result<&'b str, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let stem = path
        .file_stem()
        .map_or("list".into(), |s| s.to_string_lossy());
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(format!(
            "the file is UTF-16 (Excel's \"Unicode Text\"); save it as \"CSV UTF-8\" \
             or convert it: iconv -f UTF-16 -t UTF-8 {} > {stem}-utf8.csv",
            path.display()
        ));
    }
    if let Some(at) = bytes.iter().position(|&b| is_binary_byte(b)) {
        return Err(format!(
            "not a text file (control byte 0x{:02x} at byte {at}): expected a CSV point list",
            bytes[at]
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + line_breaks(&bytes[..e.valid_up_to()]);
        if is_gbk(bytes) {
            format!(
                "not UTF-8 (line {line}); Chinese Excel saves CSV as GBK: save it as \
                 \"CSV UTF-8\" or convert it: iconv -f GBK -t UTF-8 {} > {stem}-utf8.csv",
                path.display()
            )
        } else {
            format!(
                "not UTF-8 (line {line}), nor GBK: save the list as \"CSV UTF-8\" \
                 (iconv converts other encodings: iconv -f ENCODING -t UTF-8)"
            )
        }
    })
}

/// Bytes no CSV text holds: controls other than tab, line feed and carriage return.
fn is_binary_byte(byte: u8) -> bool {
    byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r')
}

/// Whether the bytes are well-formed GBK: ASCII, or a lead byte 0x81–0xFE followed by a
/// trail byte 0x40–0xFE other than 0x7F.
fn is_gbk(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some((&first, tail)) = rest.split_first() {
        rest = match first {
            0x00..=0x7F => tail,
            0x81..=0xFE => match tail.split_first() {
                Some((&trail, tail)) if (0x40..=0xFE).contains(&trail) && trail != 0x7F => tail,
                _ => return false,
            },
            _ => return false,
        };
    }
    true
}

/// The spreadsheet row of each record (the header is row 1): the line the record starts
/// on, less the line breaks inside earlier quoted cells (a cell stays in one row). Blank
/// lines, which csv skips, are blank rows. Lines are counted here, as csv's own line
/// numbers miss breaks inside quoted cells, and its record offsets may point at the line
/// break before a record.
fn spreadsheet_rows(
    text: &str,
    header: &csv::StringRecord,
    records: &[csv::StringRecord],
) -> Vec<usize> {
    let text = text.as_bytes();
    let breaks_in_cells = |record: &csv::StringRecord| -> usize {
        record.iter().map(|cell| line_breaks(cell.as_bytes())).sum()
    };
    let (mut line, mut counted_to) = (1, 0);
    let mut breaks_before = breaks_in_cells(header);
    records
        .iter()
        .map(|record| {
            let offset = record.position().map_or(0, |p| p.byte() as usize);
            let start = offset
                + text[offset..]
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
            line += line_breaks(&text[counted_to..start]);
            counted_to = start;
            let row = line - breaks_before;
            breaks_before += breaks_in_cells(record);
            row
        })
        .collect()
}

/// Line breaks as csv and spreadsheets see them: `\r\n`, `\n`, or a lone `\r`, which ends
/// the lines of classic Mac ("CSV (Macintosh)") files. Counting `\n` alone numbered
/// every row of such a file 1, and hid repeated ids behind the equal numbers.
fn line_breaks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count()
}

/// One row's camera, or every bad cell of it (in column order).
fn check_row<'r>(
    columns: &Columns,
    record: &'r csv::StringRecord,
    row: usize,
    first_row_of_id: &mut HashMap<&'r str, usize>,
) -> Result<Row<'r>, Vec<BadCell>> {
    let given = |field| columns.cell(record, field).filter(|c| !c.value.is_empty());
    let check = |cell: &Cell, result: Result<(), String>| result.map_err(|r| columns.bad(cell, r));

    let id = columns.cell(record, Field::Id).expect("an id column");
    let id_check = check_id(id.value).and_then(|()| {
        let first = *first_row_of_id.entry(id.value).or_insert(row);
        if first == row {
            Ok(())
        } else {
            Err(format!("`{}` is also the id of row {first}", id.value))
        }
    });
    let main = columns
        .cell(record, Field::MainStream)
        .expect("a main stream column");
    let sub = given(Field::SubStream);
    let grid = given(Field::Grid);
    let priority = given(Field::Priority).map_or(Ok(false), |cell| {
        yes_no(cell.value).ok_or_else(|| {
            columns.bad(
                &cell,
                format!("`{}` is not yes or no (是/否, true/false, 1/0)", cell.value),
            )
        })
    });
    let coordinates = coordinates(columns, record);
    let mut bad: Vec<BadCell> = [
        check(&id, id_check).err(),
        check(&main, check_stream(main.value)).err(),
        sub.as_ref()
            .and_then(|c| check(c, check_stream(c.value)).err()),
        grid.as_ref()
            .and_then(|c| check(c, not_rounded_by_excel(c.value)).err()),
    ]
    .into_iter()
    .flatten()
    .collect();
    match (priority, coordinates) {
        (Ok(priority), Ok(coordinates)) if bad.is_empty() => Ok(Row {
            id: id.value,
            name: given(Field::Name).map(|c| c.value),
            main_stream: main.value,
            sub_stream: sub.map(|c| c.value),
            coordinates,
            address: given(Field::Address).map(|c| c.value),
            grid: grid.map(|c| c.value),
            priority,
        }),
        (priority, coordinates) => {
            bad.extend(priority.err());
            bad.extend(coordinates.err().into_iter().flatten());
            bad.sort_by_key(|cell| cell.column);
            Err(bad)
        }
    }
}

/// Ids are one word, as camera files require.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty: every camera needs an id".into());
    }
    if id.contains(char::is_whitespace) {
        return Err(format!("`{id}` has a space in it; an id is one word"));
    }
    not_rounded_by_excel(id)
}

/// Excel shows long numeric codes (20-digit 国标 device codes, 12-digit grid codes) as
/// `3.40201E+19` and saves them so in CSV: the digits are lost.
fn not_rounded_by_excel(code: &str) -> Result<(), String> {
    if code.contains(['E', 'e']) && code.contains('+') && code.parse::<f64>().is_ok() {
        return Err(format!(
            "`{code}` is a long number Excel rounded: format the column as text in Excel \
             and export again"
        ));
    }
    Ok(())
}

/// RTSP URLs only (the daemon's sources); the reason never shows credentials.
fn check_stream(stream: &str) -> Result<(), String> {
    if stream.is_empty() {
        return Err("empty: a camera needs its stream URL".into());
    }
    match url::Url::parse(stream) {
        Ok(url) if matches!(url.scheme(), "rtsp" | "rtsps") && url.has_host() => Ok(()),
        _ => Err(format!("`{}` is not an rtsp:// URL", redact_url(stream))),
    }
}

fn yes_no(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "是" => Some(true),
        "0" | "false" | "no" | "n" | "否" => Some(false),
        _ => None,
    }
}

/// Longitude and latitude: both or neither.
fn coordinates(
    columns: &Columns,
    record: &csv::StringRecord,
) -> Result<Option<(f64, f64)>, Vec<BadCell>> {
    let (Some(lon), Some(lat)) = (
        columns.cell(record, Field::Longitude),
        columns.cell(record, Field::Latitude),
    ) else {
        return Ok(None); // a list with neither column (one alone is refused up front)
    };
    if lon.value.is_empty() && lat.value.is_empty() {
        return Ok(None);
    }
    let number = |cell: &Cell, other: &Cell, what: &str, limit: f64| {
        let reason = if cell.value.is_empty() {
            format!("empty while `{}` is given", columns.headers[other.column])
        } else {
            match cell.value.parse::<f64>() {
                Ok(v) if v.is_finite() && v.abs() <= limit => return Ok(v),
                Ok(v) => format!("{v} is not a {what} (-{limit}..{limit})"),
                Err(_) => format!("`{}` is not a number", cell.value),
            }
        };
        Err(columns.bad(cell, reason))
    };
    match (
        number(&lon, &lat, "longitude", 180.0),
        number(&lat, &lon, "latitude", 90.0),
    ) {
        (Ok(lon), Ok(lat)) => Ok(Some((lon, lat))),
        (lon, lat) => Err(lon.err().into_iter().chain(lat.err()).collect()),
    }
}

impl Row<'_> {
    fn to_point(&self) -> Point {
        Point {
            id: self.id.to_string(),
            name: self.name.map(String::from),
            main_stream: self.main_stream.to_string(),
            sub_stream: self.sub_stream.map(String::from),
            coordinates: self.coordinates,
            address: self.address.map(String::from),
            grid: self.grid.map(String::from),
            priority: self.priority,
            credentials: None,
        }
    }
}

/// A new camera file of the list: each camera with a whole-frame zone watching `rules`, or
/// with no zones when there are none.
fn camera_file(path: &Path, points: &[Point], rules: &[String]) -> String {
    let source = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let header = if rules.is_empty() {
        format!(
            "# Cameras imported from {source} by `cgbot cameras import`. They have no zones\n\
             # yet: each is connected and shown, but files nothing until zones are drawn on its\n\
             # picture (in the console, or as [[camera.zone]] tables).\n\n"
        )
    } else {
        format!(
            "# Cameras imported from {source} by `cgbot cameras import`. Each watches its whole\n\
             # picture (zone `{WHOLE_FRAME_ZONE}`): draw zones over the picture to refine.\n\n"
        )
    };
    let zone = default_zone(rules);
    let mut cameras = ArrayOfTables::new();
    for point in points {
        cameras.push(new_camera(point, zone.as_ref()));
    }
    if let Some(first) = cameras.get_mut(0) {
        first.decor_mut().set_prefix(header);
    }
    let mut doc = DocumentMut::new();
    doc.insert("camera", Item::ArrayOfTables(cameras));
    doc.to_string()
}

/// The whole-frame zone watching `rules`; none without rules.
fn default_zone(rules: &[String]) -> Option<Table> {
    if rules.is_empty() {
        return None;
    }
    Some(zone_table(&ZoneSpec {
        id: WHOLE_FRAME_ZONE.into(),
        name: None,
        polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
        rules: rules
            .iter()
            .map(|event| RuleSpec {
                event: event.clone(),
                fields: RuleFields::default(),
            })
            .collect(),
    }))
}

/// A `[[camera]]` table of a point, with `zone` if given.
fn new_camera(point: &Point, zone: Option<&Table>) -> Table {
    let mut table = Table::new();
    table.insert("id", toml_edit::value(point.id.as_str()));
    if let Some(name) = &point.name {
        table.insert("name", toml_edit::value(name.as_str()));
    }
    table.insert("main_stream", toml_edit::value(point.main_stream.as_str()));
    if let Some(sub) = &point.sub_stream {
        table.insert("sub_stream", toml_edit::value(sub.as_str()));
    }
    if let Some(credentials) = &point.credentials {
        table.insert("credentials", toml_edit::value(credentials.as_str()));
    }
    let mut location = InlineTable::new();
    if let Some((lon, lat)) = point.coordinates {
        location.insert("longitude", lon.into());
        location.insert("latitude", lat.into());
    }
    for (key, value) in [("address", &point.address), ("grid", &point.grid)] {
        if let Some(value) = value {
            location.insert(key, value.as_str().into());
        }
    }
    if !location.is_empty() {
        location.fmt();
        table.insert("location", toml_edit::value(location));
    }
    if point.priority {
        table.insert("priority", toml_edit::value(true));
    }
    if let Some(zone) = zone {
        let mut zones = ArrayOfTables::new();
        zones.push(zone.clone());
        table.insert("zone", Item::ArrayOfTables(zones));
    }
    table
}

/// Merges the point list into the text of the camera file `path` in use: cameras in both
/// keep their table (zones, settings, comments) with the fields the list carries updated;
/// cameras only in the file are removed; cameras only in the list are added at the end as
/// [`Imported::toml`] would have them. Nothing outside the cameras' tables changes.
pub fn merge_import(
    path: &Path,
    existing: &str,
    imported: &Imported,
) -> Result<Merged, ImportError> {
    let refuse = |reason: String| ImportError::File {
        path: path.to_path_buf(),
        reason: format!("{reason} (--replace writes a new file instead of merging)"),
    };
    let mut doc: DocumentMut = existing
        .parse()
        .map_err(|e: toml_edit::TomlError| refuse(format!("cannot merge into it: {e}")))?;
    let points: HashMap<&str, &Point> =
        imported.points.iter().map(|p| (p.id.as_str(), p)).collect();
    if doc.get("camera").is_none() {
        doc.insert("camera", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let Some(cameras) = doc.get_mut("camera").and_then(Item::as_array_of_tables_mut) else {
        return Err(refuse(
            "its cameras are not written as [[camera]] tables".into(),
        ));
    };
    let (mut kept, mut removed) = (HashSet::new(), Vec::new());
    for (index, table) in cameras.iter_mut().enumerate() {
        // A table without an id is no camera the list can name: left as it is.
        let Some(id) = table.get("id").and_then(Item::as_str).map(String::from) else {
            continue;
        };
        match points.get(id.as_str()) {
            Some(point) => {
                update_camera(table, point, &imported.given);
                kept.insert(id);
            }
            None => removed.push((index, id)),
        }
    }
    // Last first, so that the indices stay right and comments carried over from a removed
    // camera travel on past the removed cameras after it.
    let mut orphaned = String::new();
    for (index, _) in removed.iter().rev() {
        if let Some(comments) = remove_camera(cameras, *index) {
            orphaned.insert_str(0, &comments);
        }
    }
    let first_added = cameras.len();
    let zone = default_zone(&imported.rules);
    let mut added = Vec::new();
    for point in imported.points.iter().filter(|p| !kept.contains(&p.id)) {
        cameras.push(new_camera(point, zone.as_ref()));
        added.push(point.id.clone());
    }
    // Comments of the last cameras removed go above the first camera added, or to the end.
    if !orphaned.is_empty() {
        match cameras.get_mut(first_added) {
            Some(table) => prepend_comments(table, &orphaned),
            None => {
                let trailing = doc.trailing().as_str().unwrap_or("").to_string();
                doc.set_trailing(format!("{orphaned}{trailing}"));
            }
        }
    }
    Ok(Merged {
        toml: doc.to_string(),
        kept: kept.len(),
        added,
        removed: removed.into_iter().map(|(_, id)| id).collect(),
    })
}

/// Writes the point list to the camera file `path`: merged into it ([`merge_import`]) when
/// it exists and `replace` is false (`Some` says what the merge did), else a new file
/// ([`Imported::toml`]). Written through a temporary file renamed over `path`, so a daemon
/// watching the camera directory never reads half a file, and locked against a concurrent
/// zone edit.
pub fn write_import(
    path: &Path,
    imported: &Imported,
    replace: bool,
) -> Result<Option<Merged>, ImportError> {
    if replace || !path.exists() {
        file::write_replacing(path, &imported.toml)?;
        return Ok(None);
    }
    if path.is_dir() {
        return Err(ImportError::File {
            path: path.to_path_buf(),
            reason: "is a directory: name the camera file in it to merge into".into(),
        });
    }
    file::rewrite(path, |text| {
        let merged = merge_import(path, text, imported)?;
        Ok((merged.toml.clone(), Some(merged)))
    })
}

/// Sets the fields the point list carries (those it has columns for) on a camera that
/// stays; a value that is the same is left exactly as written.
fn update_camera(table: &mut Table, point: &Point, given: &[bool; Field::ALL.len()]) {
    let has = |field: Field| given[field as usize];
    let text = |value: &Option<String>| value.as_deref().map(Value::from);
    set(
        table,
        "main_stream",
        Some(point.main_stream.as_str().into()),
    );
    if has(Field::Name) {
        set(table, "name", text(&point.name));
    }
    if has(Field::SubStream) {
        set(table, "sub_stream", text(&point.sub_stream));
    }
    // Credentials moved to a secrets file; a camera file's own reference stays otherwise.
    if let Some(credentials) = &point.credentials {
        set(table, "credentials", Some(credentials.as_str().into()));
        set(table, "password_env", None);
    }
    if has(Field::Longitude) || has(Field::Address) || has(Field::Grid) {
        if table.get("location").is_none() {
            table.insert("location", toml_edit::value(InlineTable::new()));
        }
        if let Some(location) = table.get_mut("location") {
            let changed = match location.as_table_like_mut() {
                Some(location) => {
                    let mut changed = false;
                    if has(Field::Longitude) {
                        let (lon, lat) = point.coordinates.unzip();
                        changed |= set(location, "longitude", lon.map(Value::from));
                        changed |= set(location, "latitude", lat.map(Value::from));
                    }
                    if has(Field::Address) {
                        changed |= set(location, "address", text(&point.address));
                    }
                    if has(Field::Grid) {
                        changed |= set(location, "grid", text(&point.grid));
                    }
                    changed
                }
                None => false,
            };
            // Spacing of an inline table edited in its middle or end, made even again.
            if let Some(inline) = location.as_inline_table_mut().filter(|_| changed) {
                inline.fmt();
            }
        }
        if table
            .get("location")
            .and_then(Item::as_table_like)
            .is_some_and(|l| l.is_empty())
        {
            table.remove("location");
        }
    }
    if has(Field::Priority) {
        set(table, "priority", point.priority.then(|| true.into()));
    }
}

/// Sets `key` to `value`, or removes it for `None`; says whether that changed anything. An
/// equal value is left as written; a changed one keeps the comment after it.
fn set(table: &mut dyn TableLike, key: &str, value: Option<Value>) -> bool {
    let Some(mut value) = value else {
        return table.remove(key).is_some();
    };
    match table.get_mut(key) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                if same_value(old, &value) {
                    return false;
                }
                *value.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(value);
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
    true
}

fn same_value(a: &Value, b: &Value) -> bool {
    let number = |v: &Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.value() == b.value(),
        (Value::Boolean(a), Value::Boolean(b)) => a.value() == b.value(),
        _ => number(a).is_some() && number(a) == number(b),
    }
}

/// Removes camera `index`. Comments above it that a blank line separates from it (a file
/// header, notes on a group of cameras) are not the camera's: they move to the camera after
/// it, or are returned when no camera follows.
fn remove_camera(cameras: &mut ArrayOfTables, index: usize) -> Option<String> {
    let prefix = cameras
        .get(index)
        .and_then(|t| t.decor().prefix())
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();
    cameras.remove(index);
    let detached = detached_comments(&prefix);
    if detached.is_empty() {
        return None;
    }
    match cameras.get_mut(index) {
        Some(next) => {
            prepend_comments(next, detached);
            None
        }
        None => Some(detached.to_string()),
    }
}

/// Puts `comments` (ending in a blank line) above a table's own prefix.
fn prepend_comments(table: &mut Table, comments: &str) {
    let own = table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("\n")
        .to_string();
    // The blank line that ends `comments` already separates them from the table.
    let own = own.strip_prefix('\n').unwrap_or(&own);
    table.decor_mut().set_prefix(format!("{comments}{own}"));
}

/// The part of a table's prefix up to its last blank line, if it holds a comment.
fn detached_comments(prefix: &str) -> &str {
    let lines: Vec<&str> = prefix.split_inclusive('\n').collect();
    let Some(last_blank) = lines.iter().rposition(|line| line.trim().is_empty()) else {
        return "";
    };
    let end: usize = lines[..=last_blank].iter().map(|l| l.len()).sum();
    let detached = &prefix[..end];
    if detached.contains('#') {
        detached
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{load_cameras, Camera};
    use crate::fuzz::damaged_text;

    const PATH: &str = "points.csv";

    fn import_points(csv: &[u8], options: &ImportOptions) -> Result<Imported, ImportError> {
        import_bytes(Path::new(PATH), csv, &EventCatalogue::builtin(), options)
    }

    fn import(csv: &[u8], options: &ImportOptions) -> Result<Imported, String> {
        import_points(csv, options).map_err(|e| e.to_string())
    }

    fn import_all(csv: &str) -> Result<Imported, String> {
        import(csv.as_bytes(), &ImportOptions::default())
    }

    /// The imported file as `load_cameras` reads it back.
    fn reload(imported: &Imported) -> Vec<Camera> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imported.toml");
        std::fs::write(&path, &imported.toml).unwrap();
        load_cameras(&path, &EventCatalogue::builtin())
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.toml))
    }

    const CHINESE: &str = "序号,设备编码,点位名称,RTSP地址,子码流,经度,纬度,安装地址,网格编码,重点,备注\n\
        1,33010200001320000001,\"人民路\"\"东口\"\" \\ 北\",rtsp://admin:pw@10.0.0.1/main,rtsp://admin:pw@10.0.0.1/sub,120.15,30.28,人民路 12 号,330102001001,是,新装\n\
        2,33010200001320000002,解放路,rtsp://10.0.0.2/main,,,,,,否,\n";

    #[test]
    fn chinese_headers_with_a_bom_round_trip_through_load_cameras() {
        let mut csv = b"\xEF\xBB\xBF".to_vec();
        csv.extend_from_slice(CHINESE.as_bytes());
        let imported = import(&csv, &ImportOptions::default()).unwrap();
        assert_eq!(imported.cameras, 2);
        assert_eq!(imported.ignored_columns, ["序号", "备注"]);
        // New cameras have no zones: they file nothing until zones are drawn.
        assert!(imported.rules.is_empty());
        assert!(imported.toml.contains("no zones"), "{}", imported.toml);
        assert!(reload(&imported).iter().all(|c| c.zones.is_empty()));
        // `--default-zone all`: one whole-frame zone watching every event.
        let all = ImportOptions {
            default_zone: Some(vec!["all".into()]),
            skip_invalid: false,
        };
        let imported = import(&csv, &all).unwrap();
        assert_eq!(
            imported.rules,
            [
                "exposed_litter",
                "illegal_parking",
                "material_piles",
                "non_motor_parking",
                "street_vending"
            ]
        );
        let cams = reload(&imported);
        let cam = &cams[0];
        assert_eq!(cam.info.id, "33010200001320000001");
        assert_eq!(cam.info.name, "人民路\"东口\" \\ 北");
        assert_eq!(
            cam.main_stream.as_deref(),
            Some("rtsp://admin:pw@10.0.0.1/main")
        );
        assert_eq!(
            cam.sub_stream.as_deref(),
            Some("rtsp://admin:pw@10.0.0.1/sub")
        );
        let location = &cam.info.location;
        assert_eq!(
            (location.longitude, location.latitude),
            (Some(120.15), Some(30.28))
        );
        assert_eq!(location.address.as_deref(), Some("人民路 12 号"));
        assert_eq!(location.grid.as_deref(), Some("330102001001"));
        assert!(cam.priority);
        assert_eq!(cam.zones.len(), 1);
        assert_eq!(cam.zones[0].id, WHOLE_FRAME_ZONE);
        assert_eq!(cam.zones[0].polygon.area(), 1.0);
        let events: Vec<&str> = cam.zones[0]
            .rules
            .iter()
            .map(|r| r.event.as_str())
            .collect();
        assert_eq!(events, imported.rules);
        // What the list leaves out stays out: no sub stream, no location, the id as name.
        let bare = &cams[1];
        assert_eq!(bare.info.name, "解放路");
        assert_eq!(bare.sub_stream, None);
        assert_eq!(bare.info.location, Default::default());
        assert!(!bare.priority);
    }

    #[test]
    fn english_headers_in_any_case_and_chosen_rules() {
        let csv = "Camera_ID,Name,URL,Sub_Stream,LON,Lat,Address,Grid,Priority\n\
                   cam-1,Main St. 'east',rtsp://u:p@h/1,,-73.98,40.75,\"1 Main St, NY\",G1,TRUE\n\
                   cam-2,,rtsps://h/2,,,,,,0\n";
        let options = ImportOptions {
            default_zone: Some(vec!["illegal_parking".into(), " illegal_parking".into()]),
            skip_invalid: false,
        };
        let imported = import(csv.as_bytes(), &options).unwrap();
        assert_eq!(imported.rules, ["illegal_parking"]);
        assert!(imported.ignored_columns.is_empty());
        let cams = reload(&imported);
        assert_eq!(cams[0].info.name, "Main St. 'east'");
        assert_eq!(cams[0].info.location.longitude, Some(-73.98));
        assert_eq!(
            cams[0].info.location.address.as_deref(),
            Some("1 Main St, NY")
        );
        assert!(cams[0].priority && !cams[1].priority);
        assert_eq!(cams[1].info.name, "cam-2");
        assert_eq!(cams[0].zones[0].rules.len(), 1);

        let unknown = ImportOptions {
            default_zone: Some(vec!["jaywalking".into()]),
            skip_invalid: false,
        };
        let err = import(csv.as_bytes(), &unknown).unwrap_err();
        assert!(err.contains("unknown event `jaywalking`"), "{err}");
    }

    #[test]
    fn gbk_and_utf16_are_refused_with_a_way_to_convert() {
        // "设备编码,RTSP地址" in GBK.
        let gbk = b"\xc9\xe8\xb1\xb8\xb1\xe0\xc2\xeb,RTSP\xb5\xd8\xd6\xb7\ncam-1,rtsp://h/1\n";
        let err = import(gbk, &ImportOptions::default()).unwrap_err();
        assert!(err.starts_with("points.csv: not UTF-8 (line 1)"), "{err}");
        assert!(err.contains("iconv -f GBK -t UTF-8 points.csv"), "{err}");
        let err = import(b"\xFF\xFEi\0d\0", &ImportOptions::default()).unwrap_err();
        assert!(
            err.contains("UTF-16") && err.contains("iconv -f UTF-16"),
            "{err}"
        );
    }

    #[test]
    fn binary_and_other_encodings_are_not_called_gbk() {
        let err = import(b"PK\x03\x04\x14\0\x06\0", &ImportOptions::default()).unwrap_err();
        assert!(
            err.contains("not a text file (control byte 0x03 at byte 2)"),
            "{err}"
        );
        // Latin-1 "café": 0xE9 followed by a line feed is no GBK pair.
        let err = import(b"id,url\ncaf\xe9\n", &ImportOptions::default()).unwrap_err();
        assert!(err.contains("nor GBK") && !err.contains("-f GBK"), "{err}");
    }

    #[test]
    fn every_bad_row_is_named_with_row_and_column() {
        let csv = "设备编码,RTSP地址,经度,纬度,网格编码,重点\n\
                   cam-1,rtsp://u:secret@h/1,120.1,30.2,,\n\
                   ,rtsp://h/2,,,,\n\
                   cam-3,,,,,\n\
                   cam-4,http://u:secret@h/4,東經,95,,\n\
                   cam-1,rtsp://h/5,120.1,,,\n\
                   3.30102E+19,rtsp://h/6,,,3.30102E+11,maybe\n\
                   cam 7,rtsp://h/7,,,,\n";
        let err = import_all(csv).unwrap_err();
        let expected = "points.csv: 6 bad rows:\n  \
            row 3, column A `设备编码`: empty: every camera needs an id\n  \
            row 4, column B `RTSP地址`: empty: a camera needs its stream URL\n  \
            row 5, column B `RTSP地址`: `http://***@h/4` is not an rtsp:// URL, \
            column C `经度`: `東經` is not a number, \
            column D `纬度`: 95 is not a latitude (-90..90)\n  \
            row 6, column A `设备编码`: `cam-1` is also the id of row 2, \
            column D `纬度`: empty while `经度` is given\n  \
            row 7, column A `设备编码`: `3.30102E+19` is a long number Excel rounded: \
            format the column as text in Excel and export again, \
            column E `网格编码`: `3.30102E+11` is a long number Excel rounded: \
            format the column as text in Excel and export again, \
            column F `重点`: `maybe` is not yes or no (是/否, true/false, 1/0)\n  \
            row 8, column A `设备编码`: `cam 7` has a space in it; an id is one word";
        assert_eq!(err, expected);
        assert!(!err.contains("secret"));
    }

    #[test]
    fn skip_invalid_writes_the_good_rows_and_reports_the_rest() {
        let csv = "id,url\ncam-1,rtsp://h/1\ncam-1,rtsp://h/2\n,rtsp://h/3\ncam-4,rtsp://h/4\n";
        let options = ImportOptions {
            skip_invalid: true,
            ..ImportOptions::default()
        };
        let imported = import(csv.as_bytes(), &options).unwrap();
        assert_eq!(imported.cameras, 2);
        let rows: Vec<usize> = imported.skipped.iter().map(|r| r.row).collect();
        assert_eq!(rows, [3, 4]);
        let ids: Vec<String> = reload(&imported).into_iter().map(|c| c.info.id).collect();
        assert_eq!(ids, ["cam-1", "cam-4"]);
        // Nothing good at all is still an error.
        let err = import(b"id,url\n,rtsp://h/1\n", &options).unwrap_err();
        assert!(err.contains("1 bad row:\n  row 2"), "{err}");
    }

    #[test]
    fn rows_are_counted_as_a_spreadsheet_counts_them() {
        // A cell with a line break is one row; a blank line is a blank row; a row of empty
        // cells (Excel's trailing rows) is skipped.
        for eol in ["\n", "\r\n", "\r"] {
            let csv = [
                "id,url,address",
                "cam-1,rtsp://h/1,\"line one",
                "line two\"",
                "",
            ]
            .into_iter()
            .chain([",,", "cam-5,,", ""])
            .collect::<Vec<_>>()
            .join(eol);
            let err = import_all(&csv).unwrap_err();
            assert!(err.contains("1 bad row:\n  row 5, column B `url`"), "{err}");
            let fixed = csv.replace("cam-5,,", "cam-5,rtsp://h/5,");
            let cams = reload(&import_all(&fixed).unwrap());
            assert_eq!(
                cams[0].info.location.address,
                Some(format!("line one{eol}line two"))
            );
        }
    }

    #[test]
    fn a_lone_carriage_return_ends_a_row() {
        // Found by `rows_are_named_whatever_ends_the_lines`: the row after a lone \r was
        // numbered 1, like the header, and so was the next, hiding the repeated id.
        let err = import_all("id,url\rcam-0,\rcam-0,rtsp://h/1").unwrap_err();
        assert_eq!(
            err,
            "points.csv: 2 bad rows:\n  \
             row 2, column B `url`: empty: a camera needs its stream URL\n  \
             row 3, column A `id`: `cam-0` is also the id of row 2"
        );
    }

    #[test]
    fn the_preferred_of_two_columns_for_a_field_is_used() {
        let csv = "编号,设备编码,名称,取流地址,Notes\n1,cam-a,东口,rtsp://h/1,x\n";
        let imported = import_all(csv).unwrap();
        assert_eq!(
            imported.ignored_columns,
            ["编号 (设备编码 gives the camera id)", "Notes"]
        );
        assert_eq!(reload(&imported)[0].info.id, "cam-a");
    }

    #[test]
    fn a_list_without_its_key_columns_or_rows_is_refused() {
        let err = import_all("名称,地址\n东口,人民路\n").unwrap_err();
        assert!(
            err.starts_with("points.csv: no column gives the camera id (headed one of: 设备编码,"),
            "{err}"
        );
        assert!(err.contains("found: 名称, 地址"), "{err}");
        let err = import_all("id,rtsp,经度\ncam-1,rtsp://h/1,120\n").unwrap_err();
        assert!(err.contains("no column gives the latitude"), "{err}");
        let err = import_all("id,rtsp\n").unwrap_err();
        assert_eq!(err, "points.csv: no camera rows below the header");
        assert!(import_all("")
            .unwrap_err()
            .contains("no column gives the camera id"));
    }

    #[test]
    fn long_lists_of_bad_rows_are_cut_short() {
        let mut csv = String::from("id,url\n");
        for _ in 0..LISTED_ROWS + 7 {
            csv.push_str(",rtsp://h/1\n");
        }
        let err = import_all(&csv).unwrap_err();
        assert!(err.contains("57 bad rows:"), "{err}");
        assert_eq!(err.lines().count(), LISTED_ROWS + 2);
        assert!(err.ends_with("… and 7 more"), "{err}");
    }

    /// A camera file after a quarter of hand work: a header, group defaults, a refined
    /// camera with comments and a tracker setting, one about to leave the list.
    const IN_USE: &str = r#"# Cameras imported from q1.csv by `cgbot cameras import`.
# Zones drawn by 张三, 2025-04.

[defaults]
model = "yolox_nano"

[[camera]]
id = "cam-1"
name = "东门"   # as the city calls it
main_stream = "rtsp://u:p@10.0.0.1/main"
location = { longitude = 120.1, latitude = 30.2, grid = "G1" }
tracker = { max_missed = 5 }   # slow shutter

# The loading bay.
[[camera.zone]]
id = "bay"
polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
rules = [{ event = "illegal_parking", min_dwell = "10m" }]

[[camera]]
id = "cam-2"
name = "西门"
main_stream = "rtsp://u:p@10.0.0.2/main"
priority = true

[[camera]]
id = "cam-3"   # gone next quarter
main_stream = "rtsp://u:p@10.0.0.3/main"
"#;

    fn merge(csv: &str, options: &ImportOptions) -> Merged {
        let imported = import(csv.as_bytes(), options).unwrap();
        merge_import(Path::new("cams.toml"), IN_USE, &imported).unwrap()
    }

    fn load_text(text: &str) -> Vec<Camera> {
        super::super::load_text(Path::new("cams.toml"), text, &EventCatalogue::builtin())
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn a_merge_keeps_the_zones_settings_and_comments_of_cameras_that_stay() {
        // cam-1 unchanged, cam-2 renamed and moved, cam-3 gone, cam-4 new.
        let csv = "id,name,url,lon,lat,grid,priority\n\
                   cam-4,北门,rtsp://u:p@10.0.0.4/main,120.4,30.4,G4,0\n\
                   cam-1,东门,rtsp://u:p@10.0.0.1/main,120.1,30.2,G1,0\n\
                   cam-2,西门 (迁移),rtsp://u:p@10.0.0.22/main,,,,1\n";
        let merged = merge(csv, &ImportOptions::default());
        assert_eq!(
            (merged.kept, &merged.added[..], &merged.removed[..]),
            (2, &["cam-4".to_string()][..], &["cam-3".to_string()][..])
        );
        let text = &merged.toml;
        // cam-1 and everything before it, byte for byte.
        let cam2 = text.find("[[camera]]\nid = \"cam-2\"").unwrap();
        assert_eq!(
            text[..cam2],
            IN_USE[..IN_USE.find("[[camera]]\nid = \"cam-2\"").unwrap()]
        );
        // cam-2 takes the list's name and stream; it has no location to lose.
        assert!(
            text.contains(
                "[[camera]]\nid = \"cam-2\"\nname = \"西门 (迁移)\"\n\
             main_stream = \"rtsp://u:p@10.0.0.22/main\"\npriority = true\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("cam-3") && !text.contains("gone next quarter"),
            "{text}"
        );
        // cam-4 added at the end, with no zones.
        assert!(text.ends_with(
            "\n[[camera]]\nid = \"cam-4\"\nname = \"北门\"\nmain_stream = \"rtsp://u:p@10.0.0.4/main\"\n\
             location = { longitude = 120.4, latitude = 30.4, grid = \"G4\" }\n"
        ), "{text}");
        let cams = load_text(text);
        let ids: Vec<&str> = cams.iter().map(|c| c.info.id.as_str()).collect();
        assert_eq!(ids, ["cam-1", "cam-2", "cam-4"]);
        assert_eq!(cams[0].zones[0].rules[0].min_dwell.as_secs(), 600);
        assert_eq!(cams[0].tracker.max_missed, 5);
        assert!(cams[2].zones.is_empty());
        // Merging the same list again changes nothing.
        let imported = import(csv.as_bytes(), &ImportOptions::default()).unwrap();
        let again = merge_import(Path::new("cams.toml"), text, &imported).unwrap();
        assert_eq!(
            (again.kept, again.added.len(), again.removed.len()),
            (3, 0, 0)
        );
        assert_eq!(&again.toml, text);
    }

    #[test]
    fn a_merge_changes_only_the_fields_the_list_has_columns_for() {
        // No name, location or priority columns: what the file has stays. A changed
        // stream keeps the comment after it.
        let csv = "id,url\ncam-1,rtsp://u:p@10.0.0.11/main\ncam-2,rtsp://u:p@10.0.0.2/main\n";
        let in_use = IN_USE.replace(
            "main_stream = \"rtsp://u:p@10.0.0.1/main\"",
            "main_stream = \"rtsp://u:p@10.0.0.1/main\"   # NVR 1",
        );
        let imported = import(csv.as_bytes(), &ImportOptions::default()).unwrap();
        let merged = merge_import(Path::new("cams.toml"), &in_use, &imported).unwrap();
        let expected = in_use
            .replace("10.0.0.1/main", "10.0.0.11/main")
            .replace(
                "\n[[camera]]\nid = \"cam-3\"   # gone next quarter\nmain_stream = \"rtsp://u:p@10.0.0.3/main\"\n",
                "",
            );
        assert_eq!(merged.toml, expected);

        // A location column given but empty removes the location; an empty grid cell
        // removes just the grid; a "no" priority removes `priority = true`.
        let csv = "id,url,lon,lat,grid,priority\n\
                   cam-1,rtsp://u:p@10.0.0.1/main,120.1,30.2,,否\n\
                   cam-2,rtsp://u:p@10.0.0.2/main,,,,否\n";
        let merged = merge(csv, &ImportOptions::default());
        assert!(
            merged
                .toml
                .contains("location = { longitude = 120.1, latitude = 30.2 }\ntracker"),
            "{}",
            merged.toml
        );
        let cams = load_text(&merged.toml);
        assert_eq!(cams[0].info.location.grid, None);
        assert!(!cams[1].priority);
        assert_eq!(cams[1].info.location, Default::default());
    }

    #[test]
    fn a_merge_keeps_the_file_header_when_the_first_camera_leaves() {
        let csv = "id,url\ncam-2,rtsp://u:p@10.0.0.2/main\ncam-5,rtsp://h/5\n";
        let options = ImportOptions {
            default_zone: Some(vec!["illegal_parking".into()]),
            skip_invalid: false,
        };
        let in_use = IN_USE.replace("[defaults]\nmodel = \"yolox_nano\"\n\n", "");
        let imported = import(csv.as_bytes(), &options).unwrap();
        let merged = merge_import(Path::new("cams.toml"), &in_use, &imported).unwrap();
        assert!(
            merged.toml.starts_with(
                "# Cameras imported from q1.csv by `cgbot cameras import`.\n\
                 # Zones drawn by 张三, 2025-04.\n\n[[camera]]\nid = \"cam-2\"\n"
            ),
            "{}",
            merged.toml
        );
        assert!(!merged.toml.contains("loading bay"));
        // The new camera gets the default zone; the one that stays does not.
        let cams = load_text(&merged.toml);
        assert!(cams[0].zones.is_empty());
        assert_eq!(cams[1].zones[0].id, WHOLE_FRAME_ZONE);
        assert_eq!(cams[1].zones[0].rules.len(), 1);

        // Every camera gone: the header moves to the first new one.
        let csv = "id,url\ncam-7,rtsp://h/7\n";
        let imported = import(csv.as_bytes(), &ImportOptions::default()).unwrap();
        let merged = merge_import(Path::new("cams.toml"), &in_use, &imported).unwrap();
        assert_eq!(
            merged.toml,
            "# Cameras imported from q1.csv by `cgbot cameras import`.\n\
             # Zones drawn by 张三, 2025-04.\n\n\
             [[camera]]\nid = \"cam-7\"\nmain_stream = \"rtsp://h/7\"\n"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_or_not_camera_tables_is_not_merged_into() {
        let imported = import_all("id,url\ncam-1,rtsp://h/1\n").unwrap();
        for bad in ["[[camera]\n", "camera = [{ id = \"cam-1\" }]\n"] {
            let err = merge_import(Path::new("cams.toml"), bad, &imported)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("cams.toml: ") && err.contains("--replace"),
                "{err}"
            );
        }
        // An empty file is merged into like a new one.
        let merged = merge_import(Path::new("cams.toml"), "", &imported).unwrap();
        assert_eq!(merged.added, ["cam-1"]);
        assert_eq!(load_text(&merged.toml).len(), 1);
    }

    #[test]
    fn column_letters_count_like_a_spreadsheet() {
        let letters: Vec<String> = [1, 2, 26, 27, 52, 703].map(column_letters).into();
        assert_eq!(letters, ["A", "B", "Z", "AA", "AZ", "AAA"]);
    }

    /// Lines of `bytes` as a spreadsheet counts them: `\r\n`, `\n` and `\r` each end one.
    fn lines(bytes: &[u8]) -> usize {
        let text = String::from_utf8_lossy(bytes);
        1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count()
    }

    /// Imports `csv` and checks what comes out: a camera file that `load_cameras` reads,
    /// or an error naming the file, or every bad row by a row of the file (in order) and
    /// every bad cell by its column and header.
    fn check_import(csv: &[u8], skip_invalid: bool) -> Result<(), TestCaseError> {
        let options = ImportOptions {
            default_zone: None,
            skip_invalid,
        };
        let bad_rows = match import_points(csv, &options) {
            Ok(imported) => {
                prop_assert_eq!(reload(&imported).len(), imported.cameras);
                imported.skipped
            }
            Err(ImportError::File { path, .. }) => {
                prop_assert_eq!(path, Path::new(PATH));
                return Ok(());
            }
            Err(ImportError::BadRows { path, rows }) => {
                prop_assert_eq!(path, Path::new(PATH));
                prop_assert!(!rows.is_empty());
                rows
            }
            Err(ImportError::Rules(reason)) => {
                return Err(TestCaseError::fail(format!(
                    "no rules were chosen: {reason}"
                )))
            }
        };
        let last_line = lines(csv);
        let mut previous = 1;
        for row in &bad_rows {
            prop_assert!(previous < row.row && row.row <= last_line, "{:?}", bad_rows);
            previous = row.row;
            prop_assert!(!row.cells.is_empty(), "{:?}", row);
            prop_assert!(row.cells.is_sorted_by_key(|cell| cell.column), "{:?}", row);
            for cell in &row.cells {
                prop_assert!(cell.column >= 1 && !cell.header.is_empty(), "{:?}", row);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn point_list_of_arbitrary_bytes(
            csv in prop::collection::vec(any::<u8>(), 0..512),
            skip_invalid in any::<bool>(),
        ) {
            check_import(&csv, skip_invalid)?;
        }

        #[test]
        fn point_list_of_csv_like_rows(
            header in prop::sample::select(vec![
                "id,url",
                "设备编码,RTSP地址,经度,纬度,网格编码,重点",
                "name,id,url,sub_stream,lon,lat,address,grid,priority",
            ]),
            rows in "[,\"\r\n a-z0-9:/.+E-]{0,300}",
            skip_invalid in any::<bool>(),
        ) {
            check_import(format!("{header}\n{rows}").as_bytes(), skip_invalid)?;
        }

        /// Whatever ends its lines (Windows, Unix or classic Mac), a bad row is named by
        /// the row a spreadsheet shows it in.
        #[test]
        fn rows_are_named_whatever_ends_the_lines(
            rows in prop::collection::vec((0u8..6, any::<bool>()), 1..20),
            line_ends in prop::collection::vec(prop::sample::select(vec!["\n", "\r\n", "\r"]), 20),
        ) {
            let mut csv = String::from("id,url");
            let mut ids = HashSet::new();
            let mut expected = Vec::new();
            for (i, ((id, has_url), end)) in rows.iter().zip(&line_ends).enumerate() {
                let url = if *has_url { "rtsp://h/1" } else { "" };
                csv.push_str(&format!("{end}cam-{id},{url}"));
                if !ids.insert(id) || !has_url {
                    expected.push(i + 2);
                }
            }
            let named: Vec<usize> = match import_points(csv.as_bytes(), &ImportOptions::default()) {
                Ok(_) => Vec::new(),
                Err(ImportError::BadRows { rows, .. }) => rows.iter().map(|r| r.row).collect(),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            prop_assert_eq!(named, expected, "{:?}", csv);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn damaged_point_list(csv in damaged_text(CHINESE), skip_invalid in any::<bool>()) {
            check_import(csv.as_bytes(), skip_invalid)?;
        }
    }

    #[test]
    fn credentials_move_to_a_secrets_file_and_back_into_the_streams() {
        let csv = "id,main_stream,sub_stream\n\
                   cam-1,rtsp://admin:p%40ss@10.0.0.1/main,rtsp://admin:p%40ss@10.0.0.1/sub\n\
                   cam-2,rtsp://10.0.0.2/main,\n\
                   cam-3,rtsp://viewer@10.0.0.3/main,\n";
        let mut imported = import_all(csv).unwrap();
        let mut secrets = crate::config::SecretsFile::default();
        assert_eq!(imported.move_credentials(&mut secrets).unwrap(), 1);
        assert!(!imported.toml.contains("p%40ss") && !imported.toml.contains("admin"));
        assert!(
            imported.toml.contains("credentials = \"cam-1\""),
            "{}",
            imported.toml
        );
        assert_eq!(
            secrets.credentials["cam-1"],
            crate::config::Credential {
                user: Some("admin".into()),
                password: "p@ss".into()
            }
        );
        assert_eq!(secrets.credentials.len(), 1);

        // Written out and loaded back: the same URLs as in the list.
        let dir = tempfile::tempdir().unwrap();
        let (cams, secrets_path) = (dir.path().join("cams.toml"), dir.path().join("s.toml"));
        write_import(&cams, &imported, false).unwrap();
        write_secrets(&secrets_path, &secrets).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = crate::config::load_cameras_with(
            &cams,
            &EventCatalogue::builtin(),
            &crate::config::Secrets::Resolve(Some(secrets_path.clone())),
        )
        .unwrap();
        assert_eq!(
            loaded[0].main_stream.as_deref(),
            Some("rtsp://admin:p%40ss@10.0.0.1/main")
        );
        assert_eq!(
            loaded[0].sub_stream.as_deref(),
            Some("rtsp://admin:p%40ss@10.0.0.1/sub")
        );
        assert_eq!(
            loaded[2].main_stream.as_deref(),
            Some("rtsp://viewer@10.0.0.3/main")
        );

        // A second import merges into both files: a changed password, the reference kept.
        let csv2 = csv.replace("p%40ss", "n3w");
        let mut again = import_all(&csv2).unwrap();
        let mut more = crate::config::SecretsFile::default();
        again.move_credentials(&mut more).unwrap();
        write_import(&cams, &again, false).unwrap();
        write_secrets(&secrets_path, &more).unwrap();
        let text = std::fs::read_to_string(&cams).unwrap();
        assert!(
            !text.contains("n3w") && text.contains("credentials = \"cam-1\""),
            "{text}"
        );
        let file = crate::config::read_secrets_file(&secrets_path).unwrap();
        assert_eq!(file.credentials["cam-1"].password, "n3w");

        // Main and sub streams with different credentials cannot share one reference.
        let odd = "id,main_stream,sub_stream\ncam-1,rtsp://a:1@h/main,rtsp://b:2@h/sub\n";
        let err = import_all(odd)
            .unwrap()
            .move_credentials(&mut crate::config::SecretsFile::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`cam-1`: main and sub streams carry different"),
            "{err}"
        );
        assert!(!err.contains(":1@"), "{err}");
    }
}
