//! Progress counters kept through the ledger: exact before a fold, after it, and across
//! statements of every kind, checked against the recipients themselves.

use herald_store::progress;
use herald_tests::{Result, TestEnv, numbers};
use uuid::Uuid;

/// What progress says of a campaign, next to what its recipients say.
async fn check(env: &TestEnv, campaign: Uuid, step: &str) -> Result<()> {
    let shown = progress::campaigns(&env.pool, &[campaign]).await?;
    let shown = &shown[0];
    let states = env.states(campaign).await?;
    let of = |state: &str| states.get(state).copied().unwrap_or(0);
    assert_eq!(
        (
            shown.counts.total,
            shown.counts.pending,
            shown.counts.queued,
            shown.counts.sending,
            shown.counts.unknown,
            shown.counts.sent,
            shown.counts.failed,
            shown.counts.cancelled
        ),
        (
            states.values().sum::<i64>(),
            of("pending"),
            of("queued"),
            of("sending"),
            of("unknown"),
            of("sent"),
            of("failed"),
            of("cancelled")
        ),
        "{step}: progress {shown:?} against recipients {states:?}"
    );
    let by_provider: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT sent_via, count(*) FROM recipients
         WHERE campaign_id = $1 AND state = 'sent' GROUP BY 1 ORDER BY 1",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    let mut shown_by_provider: Vec<(Uuid, i64)> = progress::provider_sends(&env.pool, &[campaign])
        .await?
        .into_iter()
        .filter(|p| p.sent != 0)
        .map(|p| (p.provider_id, p.sent))
        .collect();
    shown_by_provider.sort();
    assert_eq!(shown_by_provider, by_provider, "{step}: sends per provider");
    Ok(())
}

async fn fold(env: &TestEnv) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT herald_fold_counts()")
        .fetch_one(&env.pool)
        .await?)
}

async fn unfolded(env: &TestEnv) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM recipient_count_deltas")
            .fetch_one(&env.pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_matches_the_recipients_before_and_after_each_fold() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let primary = env.create_provider(&env.provider()).await?;
    let overflow = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, primary, "ledger", &numbers("+1555300", 60), 100)
        .await?;
    let other = env
        .campaign(tenant, primary, "beside", &numbers("+1555301", 7), 100)
        .await?;
    check(&env, campaign, "created, nothing folded").await?;
    assert!(unfolded(&env).await? > 0, "the inserts left deltas to fold");

    // Statements as the pipeline makes them, each followed by a check before and after a
    // fold: a claim, leases (of claimed recipients and of first attempts claimed by range),
    // outcomes through two providers, a retry, a failure, an unknown answer settled, a
    // cancellation.
    let steps: [(&str, &str); 8] = [
        (
            "claimed",
            "UPDATE recipients SET state = 'queued', dispatch_seq = dispatch_seq + 1
             WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 ORDER BY id LIMIT 40)",
        ),
        (
            "leased",
            "UPDATE recipients SET state = 'sending'
             WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 AND state = 'queued' ORDER BY id LIMIT 30)",
        ),
        (
            "leased from pending",
            "UPDATE recipients SET state = 'sending', attempts = attempts + 1
             WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 AND state = 'pending' ORDER BY id LIMIT 5)",
        ),
        (
            "sent via the primary",
            "UPDATE recipients SET state = 'sent', sent_at = now(), sent_via = $2
             WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 AND state = 'sending' ORDER BY id LIMIT 12)",
        ),
        (
            "sent via the overflow, one retried, one failed",
            "UPDATE recipients r SET state = CASE WHEN x.n <= 5 THEN 'sent' WHEN x.n = 6 THEN 'pending' ELSE 'failed' END,
                    sent_via = CASE WHEN x.n <= 5 THEN $3 END
             FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM recipients
                   WHERE campaign_id = $1 AND state = 'sending' ORDER BY id LIMIT 7) x
             WHERE r.id = x.id",
        ),
        (
            "an answer lost",
            "UPDATE recipients SET state = 'unknown'
             WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 AND state = 'sending' ORDER BY id LIMIT 4)",
        ),
        (
            "a receipt settled it",
            "UPDATE recipients SET state = 'sent', sent_via = $2 WHERE campaign_id = $1 AND state = 'unknown'",
        ),
        (
            "cancelled",
            "UPDATE recipients SET state = 'cancelled' WHERE campaign_id = $1 AND state = 'pending'",
        ),
    ];
    for (step, statement) in steps {
        let before = unfolded(&env).await?;
        sqlx::query(statement)
            .bind(campaign)
            .bind(primary)
            .bind(overflow)
            .execute(&env.pool)
            .await?;
        check(&env, campaign, step).await?;
        check(&env, other, step).await?;
        let pending = unfolded(&env).await?;
        // Claims and leases move recipients between unfinished states, which share no
        // counter: the workers' hottest statements append nothing to the ledger.
        if step.starts_with("claimed") || step.starts_with("leased") {
            assert_eq!(
                pending,
                before,
                "{step}: appended {} deltas",
                pending - before
            );
        }
        assert_eq!(
            fold(&env).await?,
            pending,
            "{step}: the fold took every delta"
        );
        assert_eq!(unfolded(&env).await?, 0, "{step}: folded");
        check(&env, campaign, &format!("{step}, folded")).await?;
    }
    // The counters never lost the untouched campaign either.
    check(&env, other, "end").await?;
    let shown = progress::campaigns(&env.pool, &[campaign]).await?;
    assert_eq!(shown[0].counts.sent, 12 + 5 + 4);
    assert!(
        shown[0].counts.send_rate > 0.0,
        "the send rate reads the folded seconds"
    );
    Ok(())
}
