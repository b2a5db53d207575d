//! Reading an uploaded audience (CSV, NDJSON or a JSON array) as a stream of rows.
//!
//! The body is never held in memory: a parser task turns it into rows and sends them over a
//! bounded channel, so a 1,000,000-row upload costs a few thousand rows of memory (at most
//! about 20 MiB with the largest rows: the channel's and a chunk's) and the database writes
//! pace the reading. A row that cannot be parsed becomes a row error (the
//! caller keeps going to report them all); a body that cannot be read any further ends the
//! stream with a fatal error.

use crate::error::{ApiError, RowError};
use crate::limits::{self, RowScanner};
use axum::body::{Body, Bytes};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

/// Rows in flight between the parser and the database writer: the parser reads ahead of
/// an insert by this many, at most 16 MiB of rows of the largest size (2,000 were 128 MiB;
/// of small rows, a few percent of a chunk: not measured for its cost to upload time).
const CHANNEL_ROWS: usize = 256;

/// How an upload is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    NdJson,
    JsonArray,
}

impl Format {
    /// The format of a request, from its `Content-Type` header.
    pub fn of_request(headers: &axum::http::HeaderMap) -> Result<Format, ApiError> {
        Self::from_content_type(
            headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok()),
        )
    }

    pub fn from_content_type(value: Option<&str>) -> Result<Format, ApiError> {
        let essence = value
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" => Ok(Format::Csv),
            "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
                Ok(Format::NdJson)
            }
            "application/json" => Ok(Format::JsonArray),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{other}` is not an upload format: use text/csv, application/x-ndjson or application/json"
            ))),
        }
    }
}

/// One parsed row: its 1-based number, its address and its other fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub number: u64,
    pub address: String,
    pub fields: Map<String, Value>,
}

#[derive(Debug)]
pub enum Item {
    Row(Row),
    Invalid(RowError),
    /// The body cannot be read further; nothing after this.
    Fatal(String),
    /// A row (or the CSV header) is past a size limit; nothing after this.
    TooLarge(String),
    /// No byte of the body came for the idle timeout; nothing after this.
    Stalled,
}

/// A CSV cell (all text) that is a number, as a contact's attribute holds it so that segment
/// filters compare it numerically: a decimal (`42`, `-3`, `19.9`) that JSON writes back as the
/// same text. One it would not (`007`, `19.90`, `-0`, or more digits than a double holds)
/// stays text, so that a postcode or an account number is never rewritten, nor renders in a
/// message otherwise than as uploaded; and no number stored is one the services cannot read
/// back (PostgreSQL's `numeric` holds 400 digits, a double does not).
pub fn number_in_cell(text: &str) -> Option<serde_json::Number> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let decimal = match unsigned.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(unsigned),
    };
    if !decimal {
        return None;
    }
    let number: serde_json::Number = text.parse().ok()?;
    // `-0.0` reads back the same, but PostgreSQL's numeric has no negative zero: it would
    // be stored, and render, as `0.0`.
    let negative_zero = text.starts_with('-') && number.as_f64() == Some(0.0);
    (number.to_string() == text && !negative_zero).then_some(number)
}

/// Why the body stopped, when it was the guard that stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At this row (0: a CSV's header).
    TooLarge(u64),
    Stalled,
}

type StopCell = Arc<Mutex<Option<Stop>>>;

/// Starts parsing `body`; rows arrive on the returned channel in order. A body that sends
/// nothing for `idle` ends the upload (a stalled client must not hold its transaction and
/// connection), and so does a row past [`limits::MAX_ROW_BYTES`].
pub fn rows(body: Body, format: Format, idle: Duration) -> mpsc::Receiver<Item> {
    let (sender, receiver) = mpsc::channel(CHANNEL_ROWS);
    let stop: StopCell = Arc::default();
    let scanner: Box<dyn RowScanner> = match format {
        Format::Csv => Box::new(limits::CsvRecords::default()),
        Format::NdJson => Box::new(limits::Lines::default()),
        Format::JsonArray => Box::new(limits::JsonElements::default()),
    };
    // The parser's first read is given a byte order mark whole, so that it drops one exactly
    // when the scanner does.
    let first_read = match format {
        Format::Csv => limits::CSV_FIRST_READ,
        Format::NdJson | Format::JsonArray => 0,
    };
    let guard = Guard {
        scanner,
        idle,
        stop: stop.clone(),
        first_read,
        reader_gone: sender.clone(),
    };
    let reader = StreamReader::new(guarded(body, guard));
    let ended = Ended { stop };
    match format {
        Format::Csv => {
            tokio::spawn(read_csv(reader, sender, ended));
        }
        Format::NdJson => {
            tokio::spawn(read_ndjson(reader, sender, ended));
        }
        Format::JsonArray => {
            // serde_json's streaming reader is synchronous: run it on a blocking thread over a
            // bridge, element by element.
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            tokio::task::spawn_blocking(move || read_json_array(bridge, sender, ended));
        }
    }
    receiver
}

/// How [`guarded`] watches a body.
struct Guard {
    scanner: Box<dyn RowScanner>,
    /// The longest silence taken.
    idle: Duration,
    stop: StopCell,
    /// The first chunk handed on holds at least this many bytes (unless the body is shorter).
    first_read: usize,
    /// Closed once the upload stops reading rows (it ended, or its request was given up):
    /// the body is then read no further, whatever state the parser is in.
    reader_gone: mpsc::Sender<Item>,
}

/// The body's bytes, cut off (with an error the parser sees as a failed read) at the first
/// row past the limit, the first silence longer than the guard's `idle`, or once nobody
/// reads the rows.
fn guarded(
    body: Body,
    guard: Guard,
) -> Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>> {
    let chunks = body.into_data_stream().map_err(std::io::Error::other);
    Box::pin(futures::stream::unfold(
        (chunks, guard, false),
        move |(mut chunks, mut guard, done)| async move {
            if done {
                return None;
            }
            let cut = |why: Stop, stop: &StopCell| {
                *stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{why:?}"))
            };
            let mut held = Vec::new();
            let mut ended = false;
            let next = loop {
                let chunk = tokio::select! {
                    () = guard.reader_gone.closed() => break Err(std::io::Error::other("nobody reads the rows")),
                    chunk = tokio::time::timeout(guard.idle, chunks.next()) => chunk,
                };
                match chunk {
                    Err(_) => break Err(cut(Stop::Stalled, &guard.stop)),
                    Ok(None) if held.is_empty() => return None,
                    Ok(None) => {
                        ended = true;
                        break Ok(Bytes::from(held));
                    }
                    Ok(Some(Err(error))) => break Err(error),
                    Ok(Some(Ok(bytes))) if guard.scanner.feed(&bytes) => {
                        if held.is_empty() && bytes.len() >= guard.first_read {
                            break Ok(bytes);
                        }
                        held.extend_from_slice(&bytes);
                        if held.len() >= guard.first_read {
                            break Ok(Bytes::from(held));
                        }
                    }
                    Ok(Some(Ok(_))) => {
                        break Err(cut(Stop::TooLarge(guard.scanner.row()), &guard.stop));
                    }
                }
            };
            // Only the first chunk is held for its length.
            guard.first_read = 0;
            let done = next.is_err() || ended;
            Some((next, (chunks, guard, done)))
        },
    ))
}

/// Turns a failed read into the item that says why.
struct Ended {
    stop: StopCell,
}

impl Ended {
    fn item(&self, message: String) -> Item {
        match *self.stop.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(Stop::TooLarge(0)) => Item::TooLarge(format!(
                "the CSV header is longer than {} bytes",
                limits::MAX_ROW_BYTES
            )),
            Some(Stop::TooLarge(row)) => Item::TooLarge(format!(
                "row {row} is longer than {} bytes",
                limits::MAX_ROW_BYTES
            )),
            Some(Stop::Stalled) => Item::Stalled,
            None => Item::Fatal(message),
        }
    }
}

async fn read_csv<R>(reader: R, sender: mpsc::Sender<Item>, ended: Ended)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let mut csv = csv_async::AsyncReaderBuilder::new()
        .trim(csv_async::Trim::All)
        .flexible(false)
        .create_reader(reader);
    let headers = match csv.headers().await {
        Ok(headers) => headers.clone(),
        Err(error) => {
            let _ = sender
                .send(ended.item(format!("cannot read the CSV header: {error}")))
                .await;
            return;
        }
    };
    if headers.len() > limits::MAX_COLUMNS {
        let _ = sender
            .send(Item::TooLarge(format!(
                "the CSV has {} columns; at most {} are taken",
                headers.len(),
                limits::MAX_COLUMNS
            )))
            .await;
        return;
    }
    let Some(address_column) = headers
        .iter()
        .position(|h| h.eq_ignore_ascii_case("address") || h.eq_ignore_ascii_case("phone"))
    else {
        let _ = sender
            .send(Item::Fatal(
                "the CSV header has no `address` column".to_owned(),
            ))
            .await;
        return;
    };
    let mut records = csv.records();
    let mut number = 0u64;
    while let Some(record) = futures::StreamExt::next(&mut records).await {
        number += 1;
        let item = match record {
            Ok(record) => {
                let mut fields = Map::new();
                for (index, (header, value)) in headers.iter().zip(record.iter()).enumerate() {
                    if index != address_column && !header.is_empty() {
                        fields.insert(header.to_owned(), Value::String(value.to_owned()));
                    }
                }
                Item::Row(Row {
                    number,
                    address: record.get(address_column).unwrap_or("").to_owned(),
                    fields,
                })
            }
            Err(error) => match error.kind() {
                csv_async::ErrorKind::UnequalLengths { .. } | csv_async::ErrorKind::Utf8 { .. } => {
                    Item::Invalid(RowError {
                        row: number,
                        field: None,
                        reason: csv_reason(&error),
                    })
                }
                _ => ended.item(format!("cannot read the CSV body: {error}")),
            },
        };
        let fatal = matches!(item, Item::Fatal(_) | Item::TooLarge(_) | Item::Stalled);
        if sender.send(item).await.is_err() || fatal {
            return;
        }
    }
}

fn csv_reason(error: &csv_async::Error) -> String {
    match error.kind() {
        csv_async::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} fields where the header has {expected_len}"),
        csv_async::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
        _ => error.to_string(),
    }
}

/// A JSON row: an address and its variables (recipients) or attributes (contacts).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonRow {
    /// A phone number as people write it (`+1 (555) 123-4567`; without a country code with
    /// the tenant's `default_region`), stored in E.164; or a chat address.
    address: String,
    /// The row's values for templates (`attributes` for contacts, also accepted here).
    #[serde(default, alias = "attributes")]
    #[schema(value_type = Object)]
    variables: Map<String, Value>,
}

fn json_item(number: u64, parsed: Result<JsonRow, serde_json::Error>) -> Item {
    match parsed {
        // As many as a CSV's columns may hold beside the address.
        Ok(row) if row.variables.len() >= limits::MAX_COLUMNS => Item::Invalid(RowError {
            row: number,
            field: Some("variables".to_owned()),
            reason: format!(
                "has {} values (variables or attributes); at most {}",
                row.variables.len(),
                limits::MAX_COLUMNS - 1
            ),
        }),
        Ok(row) => Item::Row(Row {
            number,
            address: row.address,
            fields: row.variables,
        }),
        Err(error) => Item::Invalid(RowError {
            row: number,
            field: None,
            reason: format!("is not a valid row object: {error}"),
        }),
    }
}

async fn read_ndjson<R>(reader: R, sender: mpsc::Sender<Item>, ended: Ended)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    // Read as bytes, not `lines()`: a line that is not UTF-8 is that row's error, as in a
    // CSV, not the end of the upload with no row named.
    let mut reader = tokio::io::BufReader::new(reader);
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut first = true;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                let _ = sender
                    .send(ended.item(format!("cannot read the body: {error}")))
                    .await;
                return;
            }
        }
        // A byte order mark some editors write first is no part of the first line.
        let bytes = match line.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if first => rest,
            _ => &line[..],
        };
        first = false;
        // Blank as the row bound reads it (`limits::Lines`): JSON's whitespace only, so a
        // form feed is a row (and its error), not a line skipped.
        if bytes.iter().all(|&b| limits::is_json_whitespace(b)) {
            continue;
        }
        let item = match std::str::from_utf8(bytes) {
            Ok(text) => {
                number += 1;
                json_item(number, serde_json::from_str(text))
            }
            Err(_) => {
                number += 1;
                Item::Invalid(RowError {
                    row: number,
                    field: None,
                    reason: "is not valid UTF-8".to_owned(),
                })
            }
        };
        if sender.send(item).await.is_err() {
            return;
        }
    }
}

fn read_json_array<R: std::io::Read>(reader: R, sender: mpsc::Sender<Item>, ended: Ended) {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use std::io::Read;

    struct Rows<'a> {
        sender: &'a mpsc::Sender<Item>,
    }
    impl<'de> Visitor<'de> for Rows<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of {\"address\": …, \"variables\": {…}} objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut number = 0u64;
            // Each element is read as a generic value first so that one bad row is a row
            // error, not the end of the upload.
            while let Some(value) = seq.next_element::<Value>()? {
                number += 1;
                let item = json_item(number, serde_json::from_value(value));
                if self.sender.blocking_send(item).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }
    }

    // serde_json reads a reader a byte at a time: buffered here, or every byte would be a
    // trip through the bridge to the async body (five times slower for 200,000 rows).
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, reader);
    // A byte order mark some editors write first is no part of the array. The first three
    // bytes are read whatever chunks they come in; what is no mark is read again.
    let mut head = [0u8; 3];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                let _ = sender.blocking_send(ended.item(format!("cannot read the body: {error}")));
                return;
            }
        }
    }
    let kept = if head == *b"\xEF\xBB\xBF" { 0 } else { filled };
    let reader = std::io::Read::chain(&head[..kept], reader);
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let read = deserializer
        .deserialize_seq(Rows { sender: &sender })
        // Nothing but whitespace may follow the array.
        .and_then(|()| deserializer.end());
    if let Err(error) = read {
        let item = if error.is_io() {
            ended.item(format!("cannot read the body: {error}"))
        } else {
            Item::Fatal(format!("the JSON body is malformed: {error}"))
        };
        let _ = sender.blocking_send(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: &str, format: Format) -> Vec<Item> {
        collect_bytes(body.as_bytes(), format).await
    }

    async fn collect_bytes(body: &[u8], format: Format) -> Vec<Item> {
        let mut receiver = rows(Body::from(body.to_vec()), format, Duration::from_secs(5));
        let mut items = Vec::new();
        while let Some(item) = receiver.recv().await {
            items.push(item);
        }
        items
    }

    fn row(item: &Item) -> &Row {
        match item {
            Item::Row(row) => row,
            other => panic!("expected a row, got {other:?}"),
        }
    }

    #[test]
    fn cells_are_numbers_only_when_they_read_back_the_same() {
        for number in [
            "42",
            "-3",
            "0",
            "19.9",
            "1.0",
            "0.30000000000000004",
            "18446744073709551615",
        ] {
            assert_eq!(
                number_in_cell(number).map(|n| n.to_string()).as_deref(),
                Some(number),
                "{number}"
            );
        }
        let past_a_double = format!("1{}", "0".repeat(400));
        for text in [
            "007",
            "02134",
            "19.90",
            "-0",
            "-0.0",
            "1e5",
            "+1",
            ".5",
            "5.",
            "1.2.3",
            "",
            "-",
            " 42",
            "123456789012345678901234567890",
            "0.1000000000000000055511151231257827",
            past_a_double.as_str(),
            "n/a",
        ] {
            assert_eq!(number_in_cell(text), None, "{text}");
        }
    }

    #[tokio::test]
    async fn csv_rows_carry_the_other_columns_as_fields() {
        let items = collect(
            "address,first_name\n+33612345678,Ada\n+33612345679, Bob \n",
            Format::Csv,
        )
        .await;
        assert_eq!(items.len(), 2);
        assert_eq!(row(&items[0]).address, "+33612345678");
        assert_eq!(row(&items[1]).fields["first_name"], "Bob");
        assert_eq!(row(&items[1]).number, 2);
    }

    fn chunked(chunks: Vec<Vec<u8>>) -> Body {
        Body::from_stream(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
        ))
    }

    #[tokio::test]
    async fn a_byte_order_mark_is_dropped_however_the_body_arrives() {
        let text = "\u{feff}address,first_name\n+33612345678,Ada\n";
        // One byte a chunk: the parser drops a mark only if its first read holds it whole.
        let bytes: Vec<Vec<u8>> = text.bytes().map(|b| vec![b]).collect();
        let mut receiver = rows(chunked(bytes), Format::Csv, Duration::from_secs(5));
        let first = receiver.recv().await.expect("a row");
        assert_eq!(row(&first).address, "+33612345678");
        assert_eq!(row(&first).fields["first_name"], "Ada");
        // A mark then a quote opens a quoted header, bounded like any row: short lines
        // inside it are no rows of their own to the guard.
        let mut body = "\u{feff}\"".as_bytes().to_vec();
        body.extend_from_slice("a\n".repeat(limits::MAX_ROW_BYTES).as_bytes());
        let items = collect_bytes(&body, Format::Csv).await;
        assert!(
            matches!(&items[..], [Item::TooLarge(m)] if m.contains("header")),
            "{items:?}"
        );
    }

    #[tokio::test]
    async fn the_body_is_read_no_further_once_nobody_reads_the_rows() {
        let (dropped, told) = tokio::sync::oneshot::channel::<()>();
        // A header, then silence (within the idle limit): the parser waits for more.
        let body = futures::stream::once(async {
            Ok::<_, std::convert::Infallible>(b"address\n".to_vec())
        })
        .chain(futures::stream::pending())
        .map(move |chunk| {
            let _alive = &dropped;
            chunk
        });
        let receiver = rows(
            Body::from_stream(body),
            Format::Csv,
            Duration::from_secs(60),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(receiver);
        let gone = tokio::time::timeout(Duration::from_secs(5), told).await;
        assert!(gone.is_ok(), "the body was still held");
    }

    #[tokio::test]
    async fn csv_without_address_column_or_with_ragged_rows() {
        let items = collect("phone_number,x\n1,2\n", Format::Csv).await;
        assert!(matches!(&items[0], Item::Fatal(m) if m.contains("address")));
        let items = collect("address,x\n+3361,1\n+3362\n+3363,3\n", Format::Csv).await;
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[1], Item::Invalid(e) if e.row == 2 && e.reason.contains("fields")));
        assert_eq!(row(&items[2]).address, "+3363");
    }

    #[tokio::test]
    async fn ndjson_and_json_arrays() {
        let items = collect(
            "{\"address\":\"+1555\",\"variables\":{\"a\":1}}\n\nnot json\n{\"address\":\"+1556\"}\n",
            Format::NdJson,
        )
        .await;
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[1], Item::Invalid(e) if e.row == 2));
        assert_eq!(row(&items[2]).address, "+1556");
        // A line that is not UTF-8 is its row's error; the rows after it are read, and a
        // last line without its newline too.
        let items = collect_bytes(
            b"{\"address\":\"+1555\"}\r\n{\"address\":\"+1\xff\"}\r\n{\"address\":\"+1557\"}",
            Format::NdJson,
        )
        .await;
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(&items[1], Item::Invalid(e) if e.row == 2 && e.reason.contains("UTF-8")));
        assert_eq!(row(&items[0]).address, "+1555");
        assert_eq!(row(&items[2]).address, "+1557");
        // A byte order mark before the first row is not part of it.
        let items = collect_bytes(b"\xEF\xBB\xBF{\"address\":\"+1555\"}\n", Format::NdJson).await;
        assert_eq!(row(&items[0]).address, "+1555");

        let items = collect(
            "[{\"address\":\"+1555\"}, {\"adress\":\"+1\"}, {\"address\":\"+1557\",\"attributes\":{\"ltv\":5}}]",
            Format::JsonArray,
        )
        .await;
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[1], Item::Invalid(e) if e.row == 2));
        assert_eq!(row(&items[2]).fields["ltv"], 5);
        // Nor is one before a JSON array.
        let items =
            collect_bytes(b"\xEF\xBB\xBF[{\"address\":\"+1555\"}]", Format::JsonArray).await;
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(row(&items[0]).address, "+1555");
        // However its bytes arrive; and an array of one-byte chunks is read whole.
        for chunks in [
            vec![&b"\xEF"[..], b"\xBB", b"\xBF[{\"address\":\"+1555\"}]"],
            b"[{\"address\":\"+1555\"}]".chunks(1).collect(),
        ] {
            let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
                .into_iter()
                .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
                .collect();
            let body = Body::from_stream(futures::stream::iter(chunks));
            let mut receiver = rows(body, Format::JsonArray, Duration::from_secs(5));
            let mut items = Vec::new();
            while let Some(item) = receiver.recv().await {
                items.push(item);
            }
            assert_eq!(items.len(), 1, "{items:?}");
            assert_eq!(row(&items[0]).address, "+1555");
        }

        let items = collect("[{\"address\":\"+1555\"}, {", Format::JsonArray).await;
        assert!(matches!(items.last(), Some(Item::Fatal(_))));
        let items = collect("{\"address\":\"+1555\"}", Format::JsonArray).await;
        assert!(matches!(items.last(), Some(Item::Fatal(_))));
        let items = collect("[{\"address\":\"+1555\"}] trailing", Format::JsonArray).await;
        assert!(matches!(items.last(), Some(Item::Fatal(m)) if m.contains("trailing")));
    }

    #[tokio::test]
    async fn rows_past_the_limit_and_too_many_columns_stop_the_upload() {
        let long = "x".repeat(limits::MAX_ROW_BYTES + 1);
        for (body, format) in [
            (format!("address,a\n+1555,ok\n+1556,{long}\n"), Format::Csv),
            (
                format!("{{\"address\":\"+1555\"}}\n{{\"address\":\"{long}\"}}\n"),
                Format::NdJson,
            ),
            // Blank lines are no rows, for the bound as for the parser.
            (
                format!("{{\"address\":\"+1555\"}}\n\n \r\n{{\"address\":\"{long}\"}}\n"),
                Format::NdJson,
            ),
            (
                format!("[{{\"address\":\"+1555\"}},{{\"address\":\"{long}\"}}]"),
                Format::JsonArray,
            ),
        ] {
            let items = collect(&body, format).await;
            assert!(
                matches!(items.last(), Some(Item::TooLarge(m)) if m.contains("row 2")),
                "{format:?}: {:?}",
                items.last()
            );
        }
        // The bound names the row the parser would: a line holding only a byte order mark is
        // none, a line holding a form feed is one (not JSON's whitespace: row 2's error).
        for (body, named) in [
            (format!("\u{FEFF}\n{{\"address\":\"{long}\"}}\n"), "row 1 "),
            (
                format!("{{\"address\":\"+1555\"}}\n\x0C\n{{\"address\":\"{long}\"}}\n"),
                "row 3 ",
            ),
        ] {
            let items = collect(&body, Format::NdJson).await;
            assert!(
                matches!(items.last(), Some(Item::TooLarge(m)) if m.contains(named)),
                "{named}: {items:?}"
            );
        }
        let items = collect("{\"address\":\"+1555\"}\n\x0C\n", Format::NdJson).await;
        assert!(
            matches!(&items[1], Item::Invalid(e) if e.row == 2),
            "{items:?}"
        );
        let header: Vec<String> = (0..=limits::MAX_COLUMNS).map(|i| format!("c{i}")).collect();
        let items = collect(&format!("address,{}\n", header.join(",")), Format::Csv).await;
        assert!(matches!(items.last(), Some(Item::TooLarge(m)) if m.contains("columns")));
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_ends_the_upload() {
        let (mut tx, body) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.try_send(Ok(Bytes::from_static(b"address,a\n+1555,x\n")))
            .unwrap();
        let mut receiver = rows(
            Body::from_stream(body),
            Format::Csv,
            Duration::from_millis(200),
        );
        let mut items = Vec::new();
        while let Some(item) = receiver.recv().await {
            items.push(item);
        }
        drop(tx);
        assert!(matches!(items.first(), Some(Item::Row(_))), "{items:?}");
        assert!(matches!(items.last(), Some(Item::Stalled)), "{items:?}");
    }

    #[test]
    fn formats_from_content_type() {
        assert_eq!(
            Format::from_content_type(Some("text/csv; charset=utf-8")).unwrap(),
            Format::Csv
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-ndjson")).unwrap(),
            Format::NdJson
        );
        assert!(Format::from_content_type(Some("text/plain")).is_err());
        assert!(Format::from_content_type(None).is_err());
    }
}
