//! Loading an upload, all-or-nothing, into a temporary table of the caller's transaction.
//!
//! Rows stream from the parser into `upload_rows` (dropped at commit) in chunks; the whole
//! body is read even after the first bad row, so the report counts every bad row; if there
//! is any, nothing is kept. The caller then moves the staged rows into their real table with
//! one set-based statement (deduplicating there).

use crate::error::{ApiError, RowError};
use crate::limits::{self, ValueProblem};
use crate::phone;
use crate::upload::{self, Format, Item, Row};
use axum::body::Body;
use serde_json::Value;
use sqlx::PgConnection;
use std::time::Duration;

/// Rows per INSERT into the staging table, at most.
const CHUNK: usize = 5_000;
/// Bytes of rows (about: [`approx_bytes`]) per INSERT, at most: 5,000 rows of the largest
/// size an upload takes (64 KiB) held over 300 MiB, twice over while encoded, a gigabyte
/// of the admin's memory for one upload.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Rows waiting this long are written however few: a slow client's upload (rows of
/// kilobytes over a thin link) would otherwise leave the transaction idle past the session's
/// `idle_in_transaction_session_timeout`, and PostgreSQL would end it mid-upload.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Row errors listed in a report (all are counted).
const MAX_LISTED: usize = 100;

/// How long an upload may take: without a byte, and in all.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub idle: Duration,
    pub within: Duration,
}

impl Timing {
    pub fn of(state: &crate::state::AppState) -> Self {
        Self {
            idle: state.upload_idle,
            within: state.upload_within,
        }
    }
}

/// Streams `body` into `upload_rows (n, address, fields)` on `tx`, each address in E.164
/// (read with `region` when written without a country code). With `cell_numbers`, a CSV's
/// cells that are numbers ([`upload::number_in_cell`]) are staged as numbers. `check` adds
/// caller-specific row errors (e.g. missing template variables). Returns how many rows
/// were received.
pub async fn stage(
    tx: &mut PgConnection,
    body: Body,
    format: Format,
    timing: Timing,
    region: Option<phonenumber::country::Id>,
    cell_numbers: bool,
    check: impl Fn(&Row) -> Option<RowError>,
) -> Result<u64, ApiError> {
    let cell_numbers = cell_numbers && format == Format::Csv;
    let idle = timing.idle;
    // Rows that keep coming, however slowly, would otherwise hold the upload's slot, its
    // connection and its campaign's row for as long as the client likes.
    let deadline = tokio::time::Instant::now() + timing.within;
    herald_store::uploads::create(&mut *tx).await?;

    let mut rows = upload::rows(body, format, idle);
    let mut chunk: Vec<Row> = Vec::with_capacity(CHUNK);
    let mut chunk_bytes = 0usize;
    let mut listed: Vec<RowError> = Vec::new();
    let mut error_rows = 0u64;
    let mut received = 0u64;
    let mut written_at = std::time::Instant::now();
    loop {
        let item = match tokio::time::timeout_at(deadline, rows.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::Timeout(format!(
                    "the upload took longer than {} s in all; nothing was imported",
                    timing.within.as_secs()
                )));
            }
        };
        let error = match item {
            Item::Row(mut row) => {
                received += 1;
                if cell_numbers {
                    for value in row.fields.values_mut() {
                        if let Some(number) = value.as_str().and_then(upload::number_in_cell) {
                            *value = Value::Number(number);
                        }
                    }
                }
                let error = values(&row)?
                    .or_else(|| match phone::normalize(&row.address, region) {
                        Ok(number) => {
                            row.address = number;
                            None
                        }
                        Err(reason) => Some(RowError {
                            row: row.number,
                            field: Some("address".to_owned()),
                            reason,
                        }),
                    })
                    .or_else(|| check(&row));
                if error.is_none() && error_rows == 0 {
                    chunk_bytes += approx_bytes(&row);
                    chunk.push(row);
                    if chunk.len() == CHUNK
                        || chunk_bytes >= CHUNK_BYTES
                        || written_at.elapsed() >= FLUSH_EVERY
                    {
                        insert(tx, &mut chunk).await?;
                        chunk_bytes = 0;
                        written_at = std::time::Instant::now();
                    }
                }
                error
            }
            Item::Invalid(error) => {
                received += 1;
                Some(error)
            }
            Item::TooLarge(message) => {
                return Err(ApiError::TooLarge(format!(
                    "{message}; nothing was imported"
                )));
            }
            Item::Stalled => {
                return Err(ApiError::Timeout(format!(
                    "the upload sent nothing for {} s; nothing was imported",
                    idle.as_secs()
                )));
            }
            Item::Fatal(message) => {
                return Err(ApiError::InvalidRows {
                    message: format!("{message}; nothing was imported"),
                    error_rows: error_rows + 1,
                    rows: listed,
                });
            }
        };
        if let Some(error) = error {
            error_rows += 1;
            if listed.len() < MAX_LISTED {
                listed.push(error);
            }
        }
    }
    if error_rows > 0 {
        return Err(ApiError::InvalidRows {
            message: format!("{error_rows} of {received} rows are invalid; nothing was imported"),
            rows: listed,
            error_rows,
        });
    }
    if received == 0 {
        return Err(ApiError::field("body", "the upload has no rows"));
    }
    insert(tx, &mut chunk).await?;
    Ok(received)
}

/// A row's values as PostgreSQL and the messages can take them: a value past its size
/// limit ends the upload (413); a NUL or an out-of-range number is the row's error.
fn values(row: &Row) -> Result<Option<RowError>, ApiError> {
    let address = Value::String(row.address.clone());
    let fields = std::iter::once(("address", &address))
        .chain(row.fields.iter().map(|(k, v)| (k.as_str(), v)));
    for (field, value) in fields {
        let named = |reason: String| RowError {
            row: row.number,
            field: Some(field.to_owned()),
            reason,
        };
        if field.contains('\0') {
            return Ok(Some(named("a column name has a NUL character".into())));
        }
        match limits::check_value(value) {
            Ok(()) => {}
            Err(ValueProblem::TooLarge(reason)) => {
                return Err(ApiError::TooLarge(format!(
                    "row {}: `{field}` {reason}; nothing was imported",
                    row.number
                )));
            }
            Err(ValueProblem::Invalid(reason)) => return Ok(Some(named(reason))),
        }
    }
    Ok(None)
}

/// About how much memory `row`'s text takes: its address, names and values.
fn approx_bytes(row: &Row) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value).sum::<usize>() + 8,
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + value(v)).sum::<usize>() + 8,
            _ => 8,
        }
    }
    row.address.len()
        + row
            .fields
            .iter()
            .map(|(k, v)| k.len() + value(v))
            .sum::<usize>()
}

async fn insert(tx: &mut PgConnection, chunk: &mut Vec<Row>) -> Result<(), sqlx::Error> {
    if chunk.is_empty() {
        return Ok(());
    }
    // Moved out, not copied: the chunk is the largest thing an upload holds.
    let rows = std::mem::take(chunk);
    let mut numbers = Vec::with_capacity(rows.len());
    let mut addresses = Vec::with_capacity(rows.len());
    let mut fields = Vec::with_capacity(rows.len());
    for row in rows {
        numbers.push(i64::try_from(row.number).unwrap_or(i64::MAX));
        addresses.push(row.address);
        fields.push(Value::Object(row.fields));
    }
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    herald_store::uploads::append(&mut *tx, &numbers, &addresses, &fields).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_of_the_largest_rows_is_written_at_a_few_mebibytes() {
        let mut fields = serde_json::Map::new();
        for i in 0..16 {
            fields.insert(format!("field_{i}"), Value::String("x".repeat(4_000)));
        }
        let row = Row {
            number: 1,
            address: "+33600000001".into(),
            fields,
        };
        let bytes = approx_bytes(&row);
        assert!((64_000..70_000).contains(&bytes), "{bytes}");
        // Written every 66 rows or so, not every 5,000 (over 300 MiB).
        assert!(CHUNK_BYTES / bytes < 70);
    }
}
