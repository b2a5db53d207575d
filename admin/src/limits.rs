//! What outside input may hold, checked where it enters: sizes (past them, 413), characters
//! PostgreSQL cannot store (NUL) and numbers beyond what it can (422, naming the field).
//!
//! Upload bodies are streamed, so their limits are enforced on the bytes as they arrive by
//! the scanners here: a row can never grow past [`MAX_ROW_BYTES`] in memory, whatever its
//! format.

use serde_json::Value;

/// Most bytes of a JSON request body (uploads excepted: they stream).
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Most bytes of one uploaded row: a CSV record, an NDJSON line or a JSON array element.
pub const MAX_ROW_BYTES: usize = 64 * 1024;
/// Most columns of a CSV upload (the address included).
pub const MAX_COLUMNS: usize = 100;
/// Most bytes of one variable or attribute value, and of an address.
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Most characters of a message template (WhatsApp's text limit; a long SMS is far less).
pub const MAX_TEMPLATE_CHARS: usize = herald_shared::template::MAX_TEXT_CHARS;

/// Where in a JSON value something is wrong (`variables.first_name`, `items[2]`), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaw {
    pub path: String,
    pub reason: String,
}

/// The first string or key holding a NUL character, or number PostgreSQL cannot store, in
/// `value` (whose own path is `path`; empty for a whole body).
/// The largest magnitude a JSON number stored in PostgreSQL may have ([`flaw`]).
const MAX_NUMBER: f64 = 1e300;

pub fn flaw(value: &Value, path: &str) -> Option<Flaw> {
    // The path is kept as steps and written out only for the flaw found: written at every
    // step, a megabyte body of one long key over a long array copied the key for each
    // element (hundreds of gigabytes, tens of seconds of a runtime thread).
    let mut steps = Vec::new();
    let reason = find_flaw(value, &mut steps)?;
    let mut written = path.to_owned();
    for step in steps {
        match step {
            Step::Key(key) if written.is_empty() => written.push_str(key),
            Step::Key(key) => {
                written.push('.');
                written.push_str(key);
            }
            Step::Index(i) => written = format!("{}[{i}]", path_or_body(&written)),
        }
    }
    Some(Flaw {
        path: path_or_body(&written),
        reason: reason.into(),
    })
}

/// One step into a JSON value: an object's key or an array's index.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// What [`flaw`] finds, `steps` leading to it (the steps taken so far on the way in).
fn find_flaw<'a>(value: &'a Value, steps: &mut Vec<Step<'a>>) -> Option<&'static str> {
    match value {
        Value::String(s) if s.contains('\0') => Some("must not contain a NUL character"),
        // PostgreSQL's numeric holds far more than an f64, but writes a number back without
        // its exponent: past about 1e300 (its f64 neighbours to the largest), serde_json
        // cannot read those digits back, and the row could never be read again.
        Value::Number(n)
            if !n
                .as_f64()
                .is_some_and(|f| f.is_finite() && f.abs() <= MAX_NUMBER) =>
        {
            Some("is a number out of range (at most ±1e300)")
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            steps.push(Step::Index(i));
            let found = find_flaw(item, steps);
            if found.is_none() {
                steps.pop();
            }
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some("has a key with a NUL character");
            }
            steps.push(Step::Key(key));
            let found = find_flaw(item, steps);
            if found.is_none() {
                steps.pop();
            }
            found
        }),
        _ => None,
    }
}

fn path_or_body(path: &str) -> String {
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// What is wrong with one uploaded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueProblem {
    /// Past [`MAX_VALUE_BYTES`]: the upload ends (413).
    TooLarge(String),
    /// A NUL or an out-of-range number: the row's error (422).
    Invalid(String),
}

/// The first problem with one uploaded value, if any.
pub fn check_value(value: &Value) -> Result<(), ValueProblem> {
    let too_large = || ValueProblem::TooLarge(format!("is longer than {MAX_VALUE_BYTES} bytes"));
    // A string (nearly every uploaded value) by its length; anything else by its JSON text.
    let size = match value {
        Value::String(s) => s.len(),
        other => serde_json::to_string(other).map_or(0, |s| s.len()),
    };
    if size > MAX_VALUE_BYTES {
        return Err(too_large());
    }
    match flaw(value, "") {
        Some(flaw) => Err(ValueProblem::Invalid(flaw.reason)),
        None => Ok(()),
    }
}

/// Bounds the bytes of one row as an upload streams through, whatever the chunking.
pub trait RowScanner: Send {
    /// Takes in the next bytes; `false` once a row has grown past the limit.
    fn feed(&mut self, bytes: &[u8]) -> bool;
    /// The data row being read, counting from 1 (0: a CSV's header).
    fn row(&self) -> u64;
}

/// NDJSON: a row is a line that holds more than JSON's whitespace (blank lines are no rows,
/// as the parser reads them; nor is a byte order mark before the first line).
#[derive(Debug, Default)]
pub struct Lines {
    since: usize,
    ended: u64,
    /// The line being read holds more than whitespace.
    filled: bool,
    /// Bytes read so far, up to a leading byte order mark's length.
    head: usize,
    /// The body does not start with a byte order mark.
    unmarked: bool,
}

const BYTE_ORDER_MARK: &[u8; 3] = b"\xEF\xBB\xBF";

impl RowScanner for Lines {
    fn row(&self) -> u64 {
        self.ended + 1
    }

    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            let marks = self.head < BYTE_ORDER_MARK.len()
                && !self.unmarked
                && b == BYTE_ORDER_MARK[self.head];
            if self.head < BYTE_ORDER_MARK.len() {
                self.unmarked |= !marks;
                self.head += 1;
            }
            if b == b'\n' {
                self.ended += u64::from(self.filled);
                self.filled = false;
            } else if !marks && !is_json_whitespace(b) {
                self.filled = true;
            }
            self.since = if b == b'\n' { 0 } else { self.since + 1 };
            if self.since > MAX_ROW_BYTES {
                return false;
            }
        }
        true
    }
}

/// JSON's whitespace (RFC 8259): what may stand between values, and all a blank NDJSON line
/// holds.
pub fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// CSV: a row is a record, which may span lines inside quotes. Read as the parser reads it
/// (csv-core's defaults): a record ends at `\n`, `\r` or `\r\n` outside quotes, empty lines
/// are no records, and a `"` opens quotes only at the start of a field (`24" monitor` is
/// text); inside quotes `""` is a quote. A byte order mark that starts the body is no text
/// (the parser drops it, given the body's first three bytes in its first read: see
/// [`CSV_FIRST_READ`]), so a `"` after it opens quotes: read as text, a quoted header
/// fed short lines for ever would never be cut.
#[derive(Debug, Default)]
pub struct CsvRecords {
    since: usize,
    state: CsvState,
    /// Records ended, the header included.
    ended: u64,
    /// Bytes of the body read so far, up to the length of a byte order mark.
    head: usize,
    /// The body's first bytes are not a byte order mark.
    unmarked: bool,
}

/// The fewest bytes the CSV parser's first read must be given (unless the body is shorter):
/// csv-core drops a byte order mark only when the mark is whole in it, and a first read of
/// the mark alone, once dropped, leaves it nothing, which it takes for the end of the body.
pub const CSV_FIRST_READ: usize = BYTE_ORDER_MARK.len() + 1;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum CsvState {
    /// At the start of a record: nothing of it read yet.
    #[default]
    RecordStart,
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside quotes: the end of the quotes, or the first of `""`.
    QuoteInQuoted,
}

impl RowScanner for CsvRecords {
    fn row(&self) -> u64 {
        self.ended
    }

    fn feed(&mut self, bytes: &[u8]) -> bool {
        use CsvState::*;
        for &b in bytes {
            if self.head < BYTE_ORDER_MARK.len() && !self.unmarked {
                if b == BYTE_ORDER_MARK[self.head] {
                    self.head += 1;
                    continue;
                }
                // Not a mark after all: the bytes taken for one are text (none of them ends
                // a record or opens quotes).
                self.unmarked = true;
                if self.head > 0 {
                    self.state = Unquoted;
                    self.since += self.head;
                }
            }
            let ends_record = matches!(b, b'\n' | b'\r');
            self.state = match (self.state, b) {
                // Line ends with nothing before them (a blank line, the `\n` of `\r\n`).
                (RecordStart, _) if ends_record => RecordStart,
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b'"') => Quoted,
                (RecordStart | FieldStart, b'"') => Quoted,
                (_, _) if ends_record => {
                    self.ended += 1;
                    self.since = 0;
                    RecordStart
                }
                (_, b',') => FieldStart,
                _ => Unquoted,
            };
            if self.state != RecordStart {
                self.since += 1;
            }
            if self.since > MAX_ROW_BYTES {
                return false;
            }
        }
        true
    }
}

/// A JSON array: a row is an element, however it is laid out over lines.
#[derive(Debug, Default)]
pub struct JsonElements {
    since: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    ended: u64,
}

impl RowScanner for JsonElements {
    fn row(&self) -> u64 {
        self.ended + 1
    }

    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            self.since += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => self.depth += 1,
                    b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                    // Between the array's elements.
                    b',' if self.depth == 1 => {
                        self.since = 0;
                        self.ended += 1;
                    }
                    _ => {}
                }
                if self.depth <= 1 && matches!(b, b'[' | b']') {
                    self.since = 0;
                }
            }
            if self.since > MAX_ROW_BYTES {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// PostgreSQL keeps a JSON number exactly and writes it back without an exponent:
    /// -1.7976931348623157e308 (an f64, so taken) came back as 309 digits, which serde_json
    /// reads as out of range, and every list of that table answered 500 from then on.
    #[test]
    fn numbers_are_refused_unless_they_read_back_as_postgresql_writes_them() {
        let as_written_back = |digits: usize| format!("-17976931348623157{}", "0".repeat(digits));
        assert!(serde_json::from_str::<Value>(&as_written_back(292)).is_err());
        let largest = format!("-1{}", "0".repeat(300));
        assert!(serde_json::from_str::<Value>(&largest).is_ok());
        assert!(flaw(&json!({"x": -1.7976931348623157e308}), "").is_some());
        assert!(flaw(&json!({"x": 1.0e300}), "").is_none());
        assert!(flaw(&json!({"x": 1.0e301}), "").is_some());
    }

    #[test]
    fn nul_characters_and_huge_numbers_are_found_with_their_path() {
        assert_eq!(flaw(&json!({"a": "ok", "b": [1, "x"]}), ""), None);
        let found = flaw(&json!({"variables": {"first_name": "A\u{0}"}}), "").unwrap();
        assert_eq!(found.path, "variables.first_name");
        let found = flaw(&json!({"items": [{"k": 1}, {"k": "\u{0}"}]}), "").unwrap();
        assert_eq!(found.path, "items[1].k");
        let found = flaw(&json!("\u{0}"), "").unwrap();
        assert_eq!(found.path, "body");
        let key = flaw(&json!({"settings": {"a\u{0}": 1}}), "").unwrap();
        assert_eq!(key.path, "settings");
    }

    #[test]
    fn values_past_the_limit_are_a_size_problem() {
        assert!(check_value(&json!("Ada")).is_ok());
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(matches!(
            check_value(&json!(long)),
            Err(ValueProblem::TooLarge(_))
        ));
        let nested = json!({"nested": "x".repeat(MAX_VALUE_BYTES)});
        assert!(matches!(
            check_value(&nested),
            Err(ValueProblem::TooLarge(_))
        ));
        assert!(matches!(
            check_value(&json!("a\u{0}")),
            Err(ValueProblem::Invalid(_))
        ));
    }

    fn fits(scanner: &mut dyn RowScanner, text: &[u8], chunk: usize) -> bool {
        text.chunks(chunk).all(|c| scanner.feed(c))
    }

    #[test]
    fn rows_are_bounded_however_the_bytes_arrive() {
        let row = "x".repeat(MAX_ROW_BYTES - 10);
        let ok = format!("address,a\n+1555,{row}\n+1556,{row}\n");
        let long = format!("address,a\n+1555,ok\n+1555,{row}{row}\n");
        for chunk in [1, 7, 4096, 1 << 20] {
            assert!(fits(&mut Lines::default(), ok.as_bytes(), chunk));
            let mut lines = Lines::default();
            assert!(!fits(&mut lines, long.as_bytes(), chunk));
            assert_eq!(lines.row(), 3, "the third line");
            assert!(fits(&mut CsvRecords::default(), ok.as_bytes(), chunk));
            let mut csv = CsvRecords::default();
            assert!(!fits(&mut csv, long.as_bytes(), chunk));
            assert_eq!(csv.row(), 2, "the second data row");
        }
        // A quoted field's newlines do not end its record.
        let quoted = format!(
            "address,a\n+1555,\"{}\"\n",
            "line\n".repeat(MAX_ROW_BYTES / 4)
        );
        assert!(fits(&mut Lines::default(), quoted.as_bytes(), 64));
        assert!(!fits(&mut CsvRecords::default(), quoted.as_bytes(), 64));
    }

    #[test]
    fn csv_records_end_where_the_parser_ends_them() {
        let row = "x".repeat(MAX_ROW_BYTES / 2);
        // Rows ending in a lone `\r` (old Mac exports), or in `\r\n`, blank lines between.
        for end in ["\r", "\r\n", "\n\n", "\r\n\r\n"] {
            let text = format!("address,a{end}+1555,{row}{end}+1556,{row}{end}");
            for chunk in [1, 7, 4096] {
                let mut csv = CsvRecords::default();
                assert!(fits(&mut csv, text.as_bytes(), chunk), "{end:?}");
                assert_eq!(csv.row(), 3, "{end:?}: the header and two rows");
            }
        }
        // A `"` inside an unquoted field is text, and opens no quotes.
        let inch = format!("address,item\n+1555,24\" monitor\n+1556,{row}\n+1557,{row}\n");
        assert!(fits(&mut CsvRecords::default(), inch.as_bytes(), 64));
        // `""` inside quotes is a quote; the field goes on, and ends at its closing quote.
        let escaped = format!("address,a\n+1555,\"say \"\"hi\"\"\n{row}\"\n+1556,{row}\n");
        let mut csv = CsvRecords::default();
        assert!(fits(&mut csv, escaped.as_bytes(), 5));
        assert_eq!(csv.row(), 3);
        // A quoted field still spans lines, and is bounded as one row.
        let long = format!("address,a\n+1555,\"{row}\r\n{row}\n{row}\"\n");
        let mut csv = CsvRecords::default();
        assert!(!fits(&mut csv, long.as_bytes(), 64));
        assert_eq!(csv.row(), 1, "the first data row");
    }

    #[test]
    fn a_byte_order_mark_starts_no_text() {
        let row = "x".repeat(MAX_ROW_BYTES / 2);
        // After a mark, a `"` opens quotes, as the parser reads it: short lines inside them
        // are one record, cut at the limit.
        let quoted = format!("\u{feff}\"{}", "a\n".repeat(MAX_ROW_BYTES));
        for chunk in [1, 2, 3, 4096] {
            let mut csv = CsvRecords::default();
            assert!(
                !fits(&mut csv, quoted.as_bytes(), chunk),
                "chunks of {chunk}"
            );
            assert_eq!(csv.row(), 0, "the header");
        }
        // A marked body reads as the unmarked one.
        let text = format!("\u{feff}address,a\n+1555,{row}\n+1556,{row}\n");
        let mut csv = CsvRecords::default();
        assert!(fits(&mut csv, text.as_bytes(), 1));
        assert_eq!(csv.row(), 3);
        // Half a mark is text: the `"` after it is text too, and lines end records.
        let mut half = vec![0xEF, 0xBB, b'"'];
        half.extend_from_slice("a\n".repeat(MAX_ROW_BYTES).as_bytes());
        assert!(fits(&mut CsvRecords::default(), &half, 7));
        // A second mark is text (the parser drops one).
        let twice = format!("\u{feff}\u{feff}\"{}", "a\n".repeat(MAX_ROW_BYTES));
        assert!(fits(&mut CsvRecords::default(), twice.as_bytes(), 5));
    }

    #[test]
    fn json_elements_are_bounded_not_the_array() {
        let element = format!(
            "{{\"address\":\"+1555\",\"variables\":{{\"a\":\"{}\"}}}}",
            "y".repeat(MAX_ROW_BYTES - 100)
        );
        let many = format!("[{}]", [element.as_str(); 5].join(","));
        assert!(fits(&mut JsonElements::default(), many.as_bytes(), 333));
        // Commas and brackets inside strings are text, not boundaries.
        let sneaky = format!(
            "[{{\"address\":\"{}\"}}]",
            "a,],[".repeat(MAX_ROW_BYTES / 4)
        );
        assert!(!fits(&mut JsonElements::default(), sneaky.as_bytes(), 1000));
        let escaped = format!(
            "[{{\"address\":\"{}\"}}]",
            "\\\",".repeat(MAX_ROW_BYTES / 2)
        );
        assert!(!fits(
            &mut JsonElements::default(),
            escaped.as_bytes(),
            1000
        ));
    }
}
