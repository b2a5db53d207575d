//! Cursor pagination, shared by the list endpoints (campaigns, recipients, contacts).
//!
//! A page is `{items, next_cursor}`. The cursor is the sort key of the page's last item, as
//! JSON in URL-safe base64; clients pass it back, never build one. Keyset paging (rows
//! after the cursor's key) costs the same on the thousandth page as on the first, and a walk
//! through the pages sees each row that existed when it began exactly once, however many are
//! added meanwhile, which an OFFSET cannot promise. The caller's scope and filters are
//! applied to every page, so a cursor carries no right to see anything: one from another
//! tenant's listing only says where to start.

use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Items per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most a page may hold.
pub const MAX_LIMIT: i64 = 1000;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` (with the same filters) for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were fetched with `LIMIT limit + 1` ([`fetch_limit`]): an extra row means a
    /// next page exists, which saves clients the request for an empty last page.
    pub fn of<K: Serialize>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|last| encode(&key(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

/// The page size asked for: `limit` within 1..=[`MAX_LIMIT`], [`DEFAULT_LIMIT`] if absent.
pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    let limit = requested.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ))
    }
}

/// The `LIMIT` of the query for a page of `limit` items (one more, see [`Page::of`]).
pub fn fetch_limit(limit: i64) -> i64 {
    limit + 1
}

fn encode<K: Serialize>(key: &K) -> String {
    // Serializing a sort key (numbers, strings, timestamps) cannot fail.
    let json = serde_json::to_vec(key).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The sort key a `cursor` names, or `None` for the first page. A cursor this endpoint did
/// not hand out is refused, naming the parameter.
pub fn decode<K: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<K>, ApiError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .map(Some)
        .ok_or_else(forged)
}

/// The answer to a cursor this list did not hand out (also one that decodes, but to a key
/// no row can have).
pub fn forged() -> ApiError {
    ApiError::field(
        "cursor",
        "not a cursor this list returned (pass `next_cursor` of the previous page)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    #[test]
    fn a_page_with_a_row_to_spare_has_a_cursor_to_its_last_item() {
        let page = Page::of(vec![1_i64, 2, 3, 4], 3, |n| *n);
        assert_eq!(page.items, vec![1, 2, 3]);
        let key: Option<i64> = decode(page.next_cursor.as_deref()).unwrap();
        assert_eq!(key, Some(3));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let page = Page::of(vec![1_i64, 2, 3], 3, |n| *n);
        assert_eq!(page.items.len(), 3);
        assert!(page.next_cursor.is_none());
        let empty = Page::of(Vec::<i64>::new(), 3, |n| *n);
        assert!(empty.items.is_empty() && empty.next_cursor.is_none());
    }

    #[test]
    fn keys_of_several_columns_round_trip_exactly() {
        let at: DateTime<Utc> = "2026-11-30T17:01:02.123456Z".parse().unwrap();
        let id = Uuid::new_v4();
        let cursor = encode(&(at, id));
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "a cursor needs no escaping in a URL: {cursor}"
        );
        let back: Option<(DateTime<Utc>, Uuid)> = decode(Some(&cursor)).unwrap();
        assert_eq!(back, Some((at, id)));
    }

    #[test]
    fn no_cursor_is_the_first_page_and_a_forged_one_names_the_parameter() {
        assert_eq!(decode::<i64>(None).unwrap(), None);
        assert_eq!(decode::<i64>(Some("")).unwrap(), None);
        for bad in ["%%%", "bm90IGpzb24", &encode(&"text")] {
            let error = decode::<i64>(Some(bad)).unwrap_err();
            assert!(format!("{error:?}").contains("cursor"), "{bad}: {error:?}");
        }
    }

    #[test]
    fn limits_outside_the_range_are_refused() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some(1)).unwrap(), 1);
        assert_eq!(limit(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
        assert!(limit(Some(-5)).is_err());
    }
}
