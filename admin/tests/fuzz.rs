//! Fuzz targets (proptest) for the parsers of the admin's outside input: the segment filter
//! language (the store's, `herald_store::segments::filter`), phone numbers, and CSV / NDJSON /
//! JSON-array uploads. Whatever comes in ends in a value or a clear error: never a panic,
//! never a hang. The test suite runs each target for proptest's default 256 cases;
//! `scripts/fuzz.sh` runs many more (`PROPTEST_CASES`).

use herald_admin::phone;
use herald_admin::upload::{self, Format, Item};
use herald_store::segments::filter::Filter;
use proptest::prelude::*;
use sqlx::{Postgres, QueryBuilder};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Words and symbols of the filter language, glued at random, so that cases reach deep
/// into the parser rather than stopping at the first character.
fn filter_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => prop::sample::select(vec![
            "and", "or", "not", "(", ")", "=", "!=", "<", "<=", ">", ">=", "in", "exists",
            ",", "address", "created_at", "plan", "city", "'gold'", "'O''Brien'", "'", "42",
            "-3", "19.99", "1e999", "-0", "true", "FALSE", "date", "'2025-01-31'",
            "'2025-01-31T10:00:00+02:00'", "'9999-99-99'", "30", "days", "ago", "weeks",
            "100001", "now", " ", "\t", "\n", "é", "\u{0}", "🙂",
        ]).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.join(" "))
}

proptest! {
    #[test]
    fn fuzz_filter_language(text in filter_text()) {
        fuzz_filter(&text);
    }

    #[test]
    fn fuzz_filter_language_from_any_text(text in any::<String>()) {
        fuzz_filter(&text);
    }

    #[test]
    fn fuzz_phone_numbers(
        text in prop_oneof![
            any::<String>(),
            "[+0-9 ().\\-]{0,30}",
            "\\+[1-9][0-9]{0,20}",
        ],
        region in prop::option::of(prop::sample::select(vec!["FR", "US", "GB", "DE", "IN", "BR"])),
    ) {
        let region = region.map(|r| phone::region(r).expect("a known region"));
        if let Ok(number) = phone::normalize(&text, region) {
            // What is accepted is E.164, and reads back as itself.
            prop_assert!(number.starts_with('+'), "{number}");
            prop_assert!(number[1..].bytes().all(|b| b.is_ascii_digit()), "{number}");
            prop_assert!((3..=16).contains(&number.len()), "{number}");
            prop_assert_eq!(phone::normalize(&number, None), Ok(number.clone()));
        }
    }

    #[test]
    fn fuzz_csv_uploads(body in upload_body(b"address,first_name\n")) {
        fuzz_upload(Format::Csv, body);
    }

    #[test]
    fn fuzz_ndjson_uploads(body in upload_body(b"")) {
        fuzz_upload(Format::NdJson, body);
    }

    #[test]
    fn fuzz_json_array_uploads(body in upload_body(b"[")) {
        fuzz_upload(Format::JsonArray, body);
    }
}

fn fuzz_filter(text: &str) {
    match Filter::parse(text) {
        Ok(filter) => {
            let mut qb = QueryBuilder::<Postgres>::new("SELECT 1 FROM contacts c WHERE ");
            filter.push_sql("c", &mut qb);
            let _ = filter.attributes();
        }
        Err(error) => {
            let shown = error.to_string();
            assert!(!shown.is_empty(), "an error without a message for {text:?}");
        }
    }
}

/// Bytes that look like an upload: a plausible start, then fragments of the three formats
/// and raw bytes.
fn upload_body(start: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        3 => prop::sample::select(vec![
            "+33612345678", "06 12 34 56 78", ",", "\n", "\r\n", "\"", "\"\"", "Ada", "{", "}",
            "[", "]", "\"address\":", "\"variables\":", "{\"first_name\":\"Ada\"}", ":", "null",
            "1e400", "-", "\\u0000", "\u{0}", "\u{feff}", "é", " ",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(fragment, 0..60).prop_map(move |parts| {
        let mut body = start.to_vec();
        body.extend(parts.concat());
        body
    })
}

/// Panics on any thread of the process since the hook was installed: the upload parsers
/// run on tasks and blocking threads, where a panic would only end the channel early.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn fuzz_upload(format: Format, body: Vec<u8>) {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let items = runtime.block_on(async {
        let mut rows = upload::rows(
            axum::body::Body::from(body.clone()),
            format,
            Duration::from_secs(5),
        );
        let mut items = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(item) = rows.recv().await {
                items.push(item);
            }
        })
        .await;
        assert!(read.is_ok(), "the upload parser hung on {body:?}");
        items
    });
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        before,
        "the upload parser panicked on {body:?}"
    );
    // Rows are numbered from 1, in order; an upload ends at most once, and last.
    let mut last = 0;
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Row(row) => {
                assert!(row.number > last, "rows out of order in {items:?}");
                last = row.number;
            }
            Item::Invalid(error) => assert!(!error.reason.is_empty()),
            Item::Fatal(_) | Item::TooLarge(_) | Item::Stalled => {
                assert_eq!(
                    i,
                    items.len() - 1,
                    "an upload went on after it ended: {items:?}"
                )
            }
        }
    }
}
