//! The two decisions a recipient's transitions share, written once in the schema
//! (`herald_may_send`, `herald_held_state`; see `store/src/lib.rs`): their truth table,
//! asked of PostgreSQL itself.

use herald_tests::{Result, TestEnv};

/// A campaign's status, expiry and quiet hours; whether it may send; its held state.
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    Option<(&'a str, &'a str)>,
    bool,
    &'a str,
);

#[tokio::test]
async fn a_campaign_may_send_only_running_before_its_expiry_outside_its_quiet_hours() -> Result<()>
{
    let env = TestEnv::new(&[]).await?;
    // Noon UTC; quiet hours given in UTC, one window around noon and one that wraps midnight.
    let cases: &[Case] = &[
        // status, expires_at, quiet hours, may send, held state
        ("running", None, None, true, "pending"),
        ("running", Some("2026-01-01 13:00Z"), None, true, "pending"),
        ("running", Some("2026-01-01 12:00Z"), None, false, "expired"),
        ("running", Some("2026-01-01 11:00Z"), None, false, "expired"),
        ("running", None, Some(("11:00", "13:00")), false, "pending"),
        ("running", None, Some(("13:00", "11:00")), true, "pending"),
        ("running", None, Some(("22:00", "07:00")), true, "pending"),
        ("running", None, Some(("12:00", "12:01")), false, "pending"),
        ("running", None, Some(("11:00", "12:00")), true, "pending"),
        ("paused", None, None, false, "pending"),
        ("paused", Some("2026-01-01 11:00Z"), None, false, "expired"),
        ("cancelled", None, None, false, "cancelled"),
        // Cancelled wins over expired: the operator's act is what the recipient ends as.
        (
            "cancelled",
            Some("2026-01-01 11:00Z"),
            None,
            false,
            "cancelled",
        ),
        ("scheduled", None, None, false, "pending"),
        ("draft", None, None, false, "pending"),
        ("completed", None, None, false, "pending"),
    ];
    for &(status, expires_at, quiet, may_send, held) in cases {
        let (start, end) = quiet.unzip();
        let row: (bool, String) = sqlx::query_as(
            "SELECT herald_may_send($1, $2::timestamptz, $3::time, $4::time, 'UTC', $5::timestamptz),
                    herald_held_state($1, $2::timestamptz, $5::timestamptz)",
        )
        .bind(status)
        .bind(expires_at)
        .bind(start)
        .bind(end)
        .bind("2026-01-01 12:00Z")
        .fetch_one(&env.pool)
        .await?;
        assert_eq!(
            row,
            (may_send, held.to_owned()),
            "{status}, expires {expires_at:?}, quiet {quiet:?}"
        );
    }
    // Quiet hours are local time in the campaign's zone: noon UTC is 13:00 in Paris in winter.
    let in_paris: bool = sqlx::query_scalar(
        "SELECT herald_may_send('running', NULL, '13:00', '14:00', 'Europe/Paris', '2026-01-01 12:00Z')",
    )
    .fetch_one(&env.pool)
    .await?;
    assert!(!in_paris, "13:00–14:00 in Paris covers noon UTC in January");
    Ok(())
}
