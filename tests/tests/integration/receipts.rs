//! Receipts: providers' status callbacks, verified, stored and applied by rank, whatever
//! their order, copies or timing; and what they settle: a request whose answer was lost is
//! never sent again once a receipt says it went out.

use anyhow::Context;
use herald_shared::signature;
use herald_tests::{
    Result, SIMULATOR_APP_SECRET, SIMULATOR_WEBHOOK_SECRET, TWILIO_SID, TWILIO_TOKEN, TestEnv,
    metric_sum, numbers,
};
use herald_worker::attempts::{Dispatch, outcome};
use herald_worker::outcome::Decision;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// A provider of `kind` at the simulator, straight into the database.
async fn provider(env: &TestEnv, kind: &str, settings: Value, credentials: Value) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO providers (name, kind, endpoint, settings, credentials, timeout_ms,
                                max_in_flight)
         VALUES ($1, $1, $2, $3, $4, 2000, 10000) RETURNING id",
    )
    .bind(kind)
    .bind(&env.simulator_url)
    .bind(settings)
    .bind(credentials)
    .fetch_one(&env.pool)
    .await?)
}

/// Recipients by state, and by delivery status, of `campaign`.
async fn tally(
    env: &TestEnv,
    campaign: Uuid,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>)> {
    Ok((env.states(campaign).await?, env.deliveries(campaign).await?))
}

/// Every call's final status freed its line.
async fn assert_lines_freed(env: &TestEnv) -> Result<()> {
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM recipients WHERE live_until IS NOT NULL")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(live, 0, "every final status freed its line");
    Ok(())
}

/// Waits until every recipient of `campaign` has a final delivery status.
async fn wait_final_receipts(env: &TestEnv, campaign: Uuid, timeout: Duration) -> Result<()> {
    herald_tests::wait_until(timeout, || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND delivery_rank < 40",
        )
        .bind(campaign)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(-1);
        open == 0
    })
    .await
    .map_err(|_| anyhow::anyhow!("receipts did not all arrive within {timeout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_and_early_receipts_end_in_one_status() -> Result<()> {
    let mut env = TestEnv::new(&[
        "--latency",
        "uniform:5-40",
        "--receipt-delay",
        "uniform:0-400",
        "--receipt-shuffle",
        "--receipt-duplicate-rate",
        "0.5",
        "--receipt-early-rate",
        "0.2",
        "--delivery-failure-rate",
        "0.2",
    ])
    .await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let total = 400;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555700", total), 200)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    wait_final_receipts(&env, campaign, Duration::from_secs(30)).await?;

    let (states, deliveries) = tally(&env, campaign).await?;
    assert_eq!(states.get("sent"), Some(&(total as i64)), "{states:?}");
    // A `sent` that arrived after `delivered` did not undo it: only final statuses remain.
    let delivered = deliveries.get("delivered").copied().unwrap_or(0);
    let undelivered = deliveries.get("undelivered").copied().unwrap_or(0);
    assert_eq!(delivered + undelivered, total as i64, "{deliveries:?}");
    assert!(
        (20..=160).contains(&undelivered),
        "about 20% undelivered: {deliveries:?}"
    );

    // Every receipt the receiver accepted is kept (once the last copies have come in);
    // copies are flagged, not applied twice.
    let kept_all = herald_tests::wait_until(Duration::from_secs(10), || async {
        let accepted = env
            .simulator_stats()
            .await
            .map(|s| s["receipts"]["accepted"].as_i64().unwrap_or(-1))
            .unwrap_or(-1);
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
            .fetch_one(&env.pool)
            .await
            .unwrap_or(-2);
        let planned = 2 * total as i64;
        kept == accepted && kept > planned
    })
    .await;
    let stats = env.simulator_stats().await?;
    let (kept, duplicates, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE duplicate),
                count(DISTINCT (message_id, status)) FROM receipts",
    )
    .fetch_one(&env.pool)
    .await?;
    assert!(
        kept_all.is_ok(),
        "kept {kept}, simulator: {}",
        stats["receipts"]
    );
    assert_eq!(
        kept - duplicates,
        distinct,
        "one receipt of each status is not a copy"
    );
    assert!(duplicates > 0, "the simulator sent copies");
    assert_eq!(stats["duplicates"], 0, "nobody got a second message");

    // The progress counters agree with the rows.
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, sum(n)::int8 FROM campaign_delivery_counts WHERE campaign_id = $1
         GROUP BY status HAVING sum(n) <> 0",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    let counted: BTreeMap<String, i64> = counted.into_iter().collect();
    assert_eq!(
        counted,
        deliveries
            .into_iter()
            .filter(|(s, _)| s != "none")
            .collect()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_that_arrives_before_the_answer_settles_the_recipient() -> Result<()> {
    // Every send's first receipt is posted, and taken, before the send is answered.
    let mut env = TestEnv::new(&[
        "--latency",
        "fixed:300",
        "--receipt-early-rate",
        "1",
        "--receipt-delay",
        "fixed:20",
    ])
    .await?;
    env.receiver().await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555710", 60), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    wait_final_receipts(&env, campaign, Duration::from_secs(20)).await?;

    let (states, deliveries) = tally(&env, campaign).await?;
    assert_eq!(states.get("sent"), Some(&60), "{states:?}");
    assert_eq!(deliveries.get("delivered"), Some(&60), "{deliveries:?}");
    // Each early receipt found its recipient by the reference in its callback URL, while
    // the send was still unanswered.
    let matched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts WHERE status = 'sent' AND recipient_id IS NOT NULL",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(matched, 60);
    let ids_match: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients r WHERE r.campaign_id = $1 AND r.provider_message_id
         = (SELECT x.message_id FROM receipts x WHERE x.recipient_id = r.id LIMIT 1)",
    )
    .bind(campaign)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        ids_match, 60,
        "the recipient carries the SID the receipts name"
    );
    let first: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT first_sent_at FROM campaigns WHERE id = $1")
            .bind(campaign)
            .fetch_one(&env.pool)
            .await?;
    assert!(first.is_some(), "the campaign's first send is known");
    assert_eq!(env.simulator_stats().await?["duplicates"], 0);
    Ok(())
}

/// Posts a generic receipt body signed with `secret` to the receiver.
async fn post_generic(env: &TestEnv, provider: Uuid, body: &Value, secret: &str) -> Result<u16> {
    post_signed(
        &env.http,
        &generic_url(env, provider),
        body.to_string(),
        secret,
    )
    .await
}

/// The receiver's webhook URL for generic provider `provider`.
fn generic_url(env: &TestEnv, provider: Uuid) -> String {
    format!(
        "{}/webhooks/http/{provider}",
        env.receiver_url.as_deref().unwrap_or_default()
    )
}

/// Posts `body` to `url` signed as a generic provider's receipts are, with `secret`.
async fn post_signed(http: &reqwest::Client, url: &str, body: String, secret: &str) -> Result<u16> {
    Ok(http
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-herald-signature",
            signature::hub(secret, body.as_bytes()),
        )
        .body(body)
        .send()
        .await?
        .status()
        .as_u16())
}

/// The lease token of [`leased_recipient`]'s lease.
const LEASE_TOKEN: Uuid = Uuid::from_u128(0x1ea5e);

/// A draft campaign of one recipient, leased as a worker would (`sending`, seq 1, via
/// `provider`, [`LEASE_TOKEN`]); returns (campaign, recipient).
async fn leased_recipient(env: &TestEnv, provider: Uuid, address: &str) -> Result<(Uuid, i64)> {
    let tenant = env.tenant(&format!("t-{address}"), 1).await?;
    let campaign = env
        .campaign(tenant, provider, address, &[address.to_owned()], 10)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "UPDATE recipients SET state = 'sending', dispatch_seq = 1, attempts = 1, sent_via = $2,
                lease_until = now() + interval '1 minute', lease_token = $3
         WHERE campaign_id = $1 RETURNING id",
    )
    .bind(campaign)
    .bind(provider)
    .bind(LEASE_TOKEN)
    .fetch_one(&env.pool)
    .await?;
    Ok((campaign, id))
}

/// Receipts of every tenant share the receiver's statements, so none may wait on a lock one
/// tenant holds: an upload streaming into a campaign scheduled again holds its row as long
/// as it streams. A receipt naming that campaign's recipient (its reference may be written
/// by anyone signing for the provider) used to wait on it, and every receipt queued behind
/// it with it, until the statement timed out (503). And a reference to a recipient never
/// sent no longer makes it `sent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_held_by_an_upload_holds_no_receipt_up() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    // Leased, so its campaign has not marked a first send yet.
    let (leased_campaign, leased) = leased_recipient(&env, provider, "+15557200011").await?;
    let tenant = env.tenant("uploader", 1).await?;
    let draft = env
        .campaign(tenant, provider, "draft", &["+15557200012".to_owned()], 10)
        .await?;
    let unsent = env.recipient_ids(draft).await?[0];
    // Two uploads streaming: each holds its campaign's row until its transaction ends.
    let mut uploads = env.pool.begin().await?;
    herald_store::campaigns::lock_for_upload(&mut uploads, leased_campaign).await?;
    herald_store::campaigns::lock_for_upload(&mut uploads, draft).await?;

    for (campaign, recipient, id) in [
        (draft, unsent, "m-unsent"),
        (leased_campaign, leased, "m-leased"),
    ] {
        let receipt = json!({
            "id": id,
            "status": "delivered",
            "reference": format!("herald-{}-{recipient}", campaign.simple()),
        });
        let started = std::time::Instant::now();
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            post_generic(&env, provider, &receipt, SIMULATOR_WEBHOOK_SECRET),
        )
        .await
        .with_context(|| format!("the receipt {id} was not answered in 5 s"))??;
        assert_eq!(status, 200, "{id}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{id} answered after {:?}",
            started.elapsed()
        );
    }
    let states: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT state, delivery_status FROM recipients WHERE id = ANY($1) ORDER BY id",
    )
    .bind(vec![leased, unsent])
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(
        states,
        vec![
            ("sent".to_owned(), Some("delivered".to_owned())),
            // Never sent: its receipt is parked, not applied.
            ("pending".to_owned(), None),
        ]
    );
    uploads.rollback().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_parked_under_its_message_id_is_applied_when_the_send_is_recorded() -> Result<()>
{
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let (_, recipient) = leased_recipient(&env, provider, "+15557200001").await?;

    // A receipt without Herald's reference, for a message id no send has recorded yet.
    let early = json!({"id": "msg-early", "status": "delivered"});
    assert_eq!(
        post_generic(&env, provider, &early, SIMULATOR_WEBHOOK_SECRET).await?,
        200
    );
    let parked: (Option<i64>, String) =
        sqlx::query_as("SELECT recipient_id, status FROM receipts WHERE message_id = 'msg-early'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(parked, (None, "delivered".into()));
    let row: (String, Option<String>) =
        sqlx::query_as("SELECT state, delivery_status FROM recipients WHERE id = $1")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(row, ("sending".into(), None), "nothing applied yet");

    // The worker records the send: the parked receipt is adopted in the same statement.
    let dispatch = Dispatch {
        token: LEASE_TOKEN,
        ..Dispatch::new(recipient, 1, provider)
    };
    herald_store::recipients::record::record(
        &env.pool,
        &[outcome(
            dispatch,
            provider,
            &Decision::Sent {
                provider_message_id: Some("msg-early".into()),
            },
        )],
        herald_tests::DAY,
    )
    .await?;
    let row: (String, Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT r.state, r.delivery_status, x.recipient_id
         FROM recipients r, receipts x WHERE r.id = $1 AND x.message_id = 'msg-early'",
    )
    .bind(recipient)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        row,
        ("sent".into(), Some("delivered".into()), Some(recipient))
    );

    // Later receipts find it by its message id at once; a lower rank changes nothing.
    let read =
        json!([{"id": "msg-early", "status": "read"}, {"id": "msg-early", "status": "sent"}]);
    assert_eq!(
        post_generic(&env, provider, &read, SIMULATOR_WEBHOOK_SECRET).await?,
        200
    );
    let status: Option<String> =
        sqlx::query_scalar("SELECT delivery_status FROM recipients WHERE id = $1")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(status.as_deref(), Some("read"));

    // A receipt that raced its send's record (parked after the send was written) is picked
    // up by the scheduler's sweep.
    let (_, other) = leased_recipient(&env, provider, "+15557200002").await?;
    sqlx::query(
        "UPDATE recipients SET state = 'sent', provider_message_id = 'msg-raced' WHERE id = $1",
    )
    .bind(other)
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "INSERT INTO receipts (provider_id, message_id, status, raw_status, rank)
         VALUES ($1, 'msg-raced', 'undelivered', 'undelivered', 42)",
    )
    .bind(provider)
    .execute(&env.pool)
    .await?;
    assert_eq!(
        herald_store::receipts::adopt_parked(&env.pool, herald_store::receipts::ADOPT_WITHIN)
            .await?,
        1
    );
    let status: Option<String> =
        sqlx::query_scalar("SELECT delivery_status FROM recipients WHERE id = $1")
            .bind(other)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(status.as_deref(), Some("undelivered"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_malformed_receipts_change_nothing() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let receiver = env.receiver().await?;
    let generic = env.create_provider(&env.provider()).await?;
    let sms = env.twilio_provider("twilio_sms").await?;
    let whatsapp = provider(
        &env,
        "whatsapp",
        json!({"phone_number_id": "1055"}),
        json!({"access_token": "EAAG", "app_secret": SIMULATOR_APP_SECRET, "verify_token": "v3rify"}),
    )
    .await?;
    let (campaign, recipient) = leased_recipient(&env, sms, "+15557300001").await?;
    let reference = format!("herald-{}-{recipient}", campaign.simple());
    let unchanged = || async {
        let receipts: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
            .fetch_one(&env.pool)
            .await
            .unwrap_or(-1);
        let state: String = sqlx::query_scalar("SELECT state FROM recipients WHERE id = $1")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await
            .unwrap_or_default();
        (receipts, state)
    };
    let before = unchanged().await;
    assert_eq!(before, (0, "sending".into()));

    // Twilio: the signature covers the full URL (reference included) and every parameter.
    let url = format!("{receiver}/webhooks/twilio/{sms}?ref={reference}&seq=1");
    let params: Vec<(String, String)> = [
        ("MessageSid", "SM1"),
        ("MessageStatus", "delivered"),
        ("AccountSid", TWILIO_SID),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let form = |params: &[(String, String)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .finish()
    };
    let post_twilio = |url: String, body: String, signature: Option<String>| {
        let mut request = env
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        async move { Ok::<u16, anyhow::Error>(request.send().await?.status().as_u16()) }
    };
    let good = signature::twilio(TWILIO_TOKEN, &url, &params);
    assert_eq!(post_twilio(url.clone(), form(&params), None).await?, 401);
    let wrong_key = signature::twilio("not-the-token", &url, &params);
    assert_eq!(
        post_twilio(url.clone(), form(&params), Some(wrong_key)).await?,
        403
    );
    // The same signature with the reference pointed at another recipient.
    let moved = url.replace(&format!("-{recipient}&"), &format!("-{}&", recipient + 1));
    assert_eq!(
        post_twilio(moved, form(&params), Some(good.clone())).await?,
        403
    );
    let mut tampered = params.clone();
    tampered[1].1 = "undelivered".into();
    assert_eq!(
        post_twilio(url.clone(), form(&tampered), Some(good.clone())).await?,
        403
    );
    // Signed, but not a status callback.
    let junk = vec![("Hello".to_owned(), "world".to_owned())];
    let signed_junk = signature::twilio(TWILIO_TOKEN, &url, &junk);
    assert_eq!(
        post_twilio(url.clone(), form(&junk), Some(signed_junk)).await?,
        400
    );

    // WhatsApp: the subscription check, then notifications signed over the raw body.
    let verify = |token: &str| {
        let url = format!(
            "{receiver}/webhooks/whatsapp/{whatsapp}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        );
        let http = env.http.clone();
        async move {
            let response = http.get(url).send().await?;
            Ok::<(u16, String), anyhow::Error>((response.status().as_u16(), response.text().await?))
        }
    };
    assert_eq!(verify("v3rify").await?, (200, "1158201444".into()));
    assert_eq!(verify("guess").await?.0, 403);
    let notification = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "1055"},
         "statuses": [{"id": "wamid.X", "status": "read", "timestamp": "1785000000"}]}}]}]})
    .to_string();
    let post_meta = |body: String, signature: Option<String>| {
        let mut request = env
            .http
            .post(format!("{receiver}/webhooks/whatsapp/{whatsapp}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        async move { Ok::<u16, anyhow::Error>(request.send().await?.status().as_u16()) }
    };
    let meta_signature = signature::hub(SIMULATOR_APP_SECRET, notification.as_bytes());
    assert_eq!(post_meta(notification.clone(), None).await?, 401);
    assert_eq!(
        post_meta(
            notification.replace("read", "sent"),
            Some(meta_signature.clone())
        )
        .await?,
        403
    );
    assert_eq!(
        post_meta(
            notification.clone(),
            Some(signature::hub("other-app", notification.as_bytes()))
        )
        .await?,
        403
    );
    let not_json = "{\"object\":";
    assert_eq!(
        post_meta(
            not_json.into(),
            Some(signature::hub(SIMULATOR_APP_SECRET, not_json.as_bytes()))
        )
        .await?,
        400
    );

    // Generic: HMAC-SHA256 of the body with the provider's webhook secret.
    let receipt = json!({"id": "m1", "status": "delivered", "reference": reference});
    assert_eq!(
        post_generic(&env, generic, &receipt, "wrong-secret").await?,
        403
    );
    let malformed = json!({"id": "m1", "status": "teleported"});
    assert_eq!(
        post_generic(&env, generic, &malformed, SIMULATOR_WEBHOOK_SECRET).await?,
        400
    );
    // A receipt for a provider id that does not exist.
    assert_eq!(
        post_generic(&env, Uuid::new_v4(), &receipt, SIMULATOR_WEBHOOK_SECRET).await?,
        404
    );

    assert_eq!(
        unchanged().await,
        before,
        "no refused webhook stored or changed anything"
    );

    // The genuine ones are taken: Twilio's settles the recipient by its reference, Meta's
    // is kept (parked: no send has that wamid).
    assert_eq!(post_twilio(url, form(&params), Some(good)).await?, 200);
    assert_eq!(
        post_meta(notification.clone(), Some(meta_signature)).await?,
        200
    );
    let settled: (String, Option<String>) =
        sqlx::query_as("SELECT state, delivery_status FROM recipients WHERE id = $1")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(settled, ("sent".into(), Some("delivered".into())));
    assert_eq!(unchanged().await.0, 2);

    // One Meta app, two numbers, two providers: a status of the other number, posted to the
    // first one's URL, is kept as the other provider's.
    let sibling = provider(
        &env,
        "whatsapp",
        json!({"phone_number_id": "2077"}),
        json!({"access_token": "EAAG", "app_secret": SIMULATOR_APP_SECRET}),
    )
    .await?;
    let other_number = notification
        .replace("1055", "2077")
        .replace("wamid.X", "wamid.Y");
    let signature = signature::hub(SIMULATOR_APP_SECRET, other_number.as_bytes());
    assert_eq!(post_meta(other_number, Some(signature)).await?, 200);
    let owner: Uuid =
        sqlx::query_scalar("SELECT provider_id FROM receipts WHERE message_id = 'wamid.Y'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(owner, sibling);
    // A number none of the tenant's providers has: no message of Herald's, answered (Meta
    // would retry anything else) and dropped, not kept as the first provider's.
    let unknown_number = notification
        .replace("1055", "3099")
        .replace("wamid.X", "wamid.Z");
    let signature = signature::hub(SIMULATOR_APP_SECRET, unknown_number.as_bytes());
    assert_eq!(post_meta(unknown_number, Some(signature)).await?, 200);
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts WHERE message_id = 'wamid.Z'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(kept, 0, "a status of another number was kept");
    // A notification naming many numbers (anyone holding the app's secret can sign one):
    // eight read from the database (the sibling, remembered, costs none), the rest dropped
    // and counted, and a refusal recorded (one may have held a lost request's status); each
    // number was a read in turn, and a few such notifications held every tenant's receipts
    // up.
    let change = |number: &str, wamid: &str| {
        json!({"field": "messages", "value": {"metadata": {"phone_number_id": number},
               "statuses": [{"id": wamid, "status": "read", "timestamp": "1785000000"}]}})
    };
    let changes: Vec<Value> = std::iter::once(change("2077", "wamid.W"))
        .chain((0..20).map(|i| change(&format!("40{i:02}"), &format!("wamid.N{i}"))))
        .collect();
    let many_numbers = json!({"object": "whatsapp_business_account",
                              "entry": [{"changes": changes}]})
    .to_string();
    let refused_at = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT receipts_refused_at FROM providers WHERE id = $1",
        )
        .bind(whatsapp)
        .fetch_one(&env.pool)
        .await
        .ok()
        .flatten()
    };
    // Statuses dropped as `result`, `count` of them so far, and a refusal of the provider
    // noted since `posted_at`.
    let (refused_at, env) = (&refused_at, &env);
    let counted_as_refused = |result: &'static str, count: f64, posted_at| async move {
        let metrics = env
            .scrape(env.receiver_service().context("the receiver runs")?)
            .await?;
        let counted = metric_sum(
            &metrics,
            "herald_receipts_results_total",
            &[("result", result)],
        );
        anyhow::ensure!(counted == Some(count), "{result}: {counted:?}");
        herald_tests::wait_until(Duration::from_secs(10), || async {
            refused_at().await.is_some_and(|at| at >= posted_at)
        })
        .await
        .map_err(|_| anyhow::anyhow!("{result}: not counted as a refusal"))
    };
    // Earlier refusals of this test's are noted before this (and written within a second,
    // with their own times): only one noted from now on counts.
    let posted_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&env.pool)
        .await?;
    let signature = signature::hub(SIMULATOR_APP_SECRET, many_numbers.as_bytes());
    assert_eq!(post_meta(many_numbers, Some(signature)).await?, 200);
    let owner: Uuid =
        sqlx::query_scalar("SELECT provider_id FROM receipts WHERE message_id = 'wamid.W'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(owner, sibling, "the sibling's status is kept");
    // Past eight numbers read.
    counted_as_refused("numbers_past_limit", 12.0, posted_at).await?;
    // A status Herald cannot read (no id) costs only itself: the others are stored and the
    // notification answered 200 (refused, Meta would send it again for days, each time
    // refused), and it counts as a refusal (it may have been a lost request's).
    let one_unreadable = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "1055"},
         "statuses": [{"status": "read", "timestamp": "1785000000"},
                      {"id": "wamid.V", "status": "read", "timestamp": "1785000000"}]}}]}]})
    .to_string();
    let posted_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&env.pool)
        .await?;
    let signature = signature::hub(SIMULATOR_APP_SECRET, one_unreadable.as_bytes());
    assert_eq!(post_meta(one_unreadable, Some(signature)).await?, 200);
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts WHERE message_id = 'wamid.V'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(
        kept, 1,
        "the readable status beside an unreadable one is kept"
    );
    counted_as_refused("unreadable", 1.0, posted_at).await?;
    // A generic provider's list with items Herald cannot read: the others are kept (refused
    // whole, the provider would send the same list again, for good), and counted so.
    let list = json!([{"id": "g-kept", "status": "delivered"}, {"id": "g-bad", "status": "teleported"},
                      {"id": 7, "status": "sent"}]);
    assert_eq!(
        post_generic(env, generic, &list, SIMULATOR_WEBHOOK_SECRET).await?,
        200
    );
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM receipts WHERE message_id LIKE 'g-%'")
            .fetch_all(&env.pool)
            .await?;
    assert_eq!(kept, ["g-kept"]);
    let metrics = env
        .scrape(env.receiver_service().context("the receiver runs")?)
        .await?;
    assert_eq!(
        metric_sum(
            &metrics,
            "herald_receipts_results_total",
            &[("result", "unreadable")]
        ),
        Some(3.0)
    );
    // Meta's notifications may reach 3 MB: taken whole (axum's default limit is 2 MiB).
    let large = notification.replace(
        "\"metadata\"",
        &format!("\"padding\": \"{}\", \"metadata\"", "x".repeat(3_000_000)),
    );
    let signature = signature::hub(SIMULATOR_APP_SECRET, large.as_bytes());
    assert_eq!(post_meta(large, Some(signature)).await?, 200);
    // One over 4 MiB is refused before it is read further.
    let too_large = notification.replace(
        "\"metadata\"",
        &format!("\"padding\": \"{}\", \"metadata\"", "x".repeat(4 << 20)),
    );
    let signature = signature::hub(SIMULATOR_APP_SECRET, too_large.as_bytes());
    assert_eq!(post_meta(too_large, Some(signature)).await?, 413);
    Ok(())
}

/// A provider's webhook secret, rotated, signs its receipts at once (a receipt refused with
/// the secret the receiver last read makes it read the provider again, at most every 2 s),
/// not when the receiver's copy expires 30 s later: Twilio does not send a refused callback
/// again. The old secret is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_webhook_secret_is_taken_at_once() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let receipt = |id: &str| json!({"id": id, "status": "delivered"});
    assert_eq!(
        post_generic(&env, provider, &receipt("m1"), SIMULATOR_WEBHOOK_SECRET).await?,
        200,
        "the receiver holds the provider as first read"
    );
    sqlx::query(
        "UPDATE providers SET credentials = jsonb_set(credentials, '{webhook_secret}', '\"rotated\"')
         WHERE id = $1",
    )
    .bind(provider)
    .execute(&env.pool)
    .await?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        post_generic(&env, provider, &receipt("m2"), "rotated").await?,
        200,
        "the rotated secret was refused"
    );
    assert_eq!(
        post_generic(&env, provider, &receipt("m3"), SIMULATOR_WEBHOOK_SECRET).await?,
        403,
        "the old secret still taken"
    );
    Ok(())
}

/// A provider's credentials rotated at Herald before the provider stops signing with the
/// old ones (Twilio signs with the primary auth token until the secondary is promoted, and
/// does not send a refused callback again) keep its receipts coming: those signed with the
/// replaced token are taken for the rotation's grace, a day by default, and at once no
/// longer after a rotation with no grace (a leaked token). Callbacks of requests made before
/// the receiver's URL changed pass as the URLs it had before are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_signed_with_replaced_credentials_or_an_old_url_pass_for_a_while() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let old_url = "https://hooks-before.example.com/herald";
    env.receiver_with(&[("HERALD_RECEIVER_PREVIOUS_URLS", old_url)])
        .await?;
    let admin = env.admin().await?;
    let sms = env.twilio_provider("twilio_sms").await?;
    assert_eq!(
        env.post_twilio_callback(sms, None, TWILIO_TOKEN, "SM1")
            .await?,
        200,
        "the receiver holds the provider as first read"
    );
    let path = format!("/providers/{sms}/credentials");
    let rotate = |credentials: Value| {
        admin.call(
            &admin.operator_key,
            reqwest::Method::PUT,
            &path,
            Some(credentials),
        )
    };
    let token = |token: &str| json!({"account_sid": TWILIO_SID, "auth_token": token});
    for bad in [json!(-1), json!(604_801), json!("1")] {
        let (status, body) =
            rotate(json!({"credentials": token("n3w"), "grace_seconds": bad})).await?;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body.to_string().contains("grace_seconds"), "{body}");
    }
    let (status, rotated) = rotate(json!({"credentials": token("n3w")})).await?;
    assert_eq!(status, 200, "{rotated}");
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(rotated["previous_credentials_until"].clone())
            .with_context(|| format!("{rotated}"))?;
    let grace = until - chrono::Utc::now();
    assert!(
        grace > chrono::TimeDelta::hours(23) && grace <= chrono::TimeDelta::hours(24),
        "a day by default: {rotated}"
    );

    assert_eq!(
        env.post_twilio_callback(sms, None, "n3w", "SM2").await?,
        200,
        "the new token refused"
    );
    assert_eq!(
        env.post_twilio_callback(sms, None, TWILIO_TOKEN, "SM3")
            .await?,
        200,
        "the replaced token refused within its grace"
    );
    assert_eq!(
        env.post_twilio_callback(sms, Some(old_url), "n3w", "SM4")
            .await?,
        200,
        "a callback signed for the receiver's previous URL refused"
    );
    assert_eq!(
        env.post_twilio_callback(sms, Some("https://elsewhere.example.com"), "n3w", "SM5")
            .await?,
        403,
        "a callback signed for a URL the receiver never had taken"
    );
    assert_eq!(
        env.post_twilio_callback(sms, None, "n0t-a-t0ken", "SM6")
            .await?,
        403
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts WHERE provider_id = $1 AND message_id IN ('SM3', 'SM4')",
    )
    .bind(sms)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(stored, 2, "the receipts taken are stored");

    // The same credentials again (a retry whose answer was lost) keep the replaced ones,
    // which Twilio may still be signing with, and their grace.
    let (status, again) = rotate(json!({"credentials": token("n3w")})).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["previous_credentials_until"], rotated["previous_credentials_until"],
        "{again}"
    );
    let replaced: Option<String> = sqlx::query_scalar(
        "SELECT previous_credentials->>'auth_token' FROM providers WHERE id = $1",
    )
    .bind(sms)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(replaced.as_deref(), Some(TWILIO_TOKEN));

    // A short grace ends: the token replaced is refused after it, and the one replaced
    // before goes at the rotation.
    let (status, rotated) =
        rotate(json!({"credentials": token("n3w3r"), "grace_seconds": 5})).await?;
    assert_eq!(status, 200, "{rotated}");
    // Taken at once, though a refused signature (SM6's, just before) read the provider
    // moments ago and a refusal reads it again at most every 2 s: the rotation's
    // notification made the receiver forget its copy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.post_twilio_callback(sms, None, "n3w3r", "SM7").await?,
        200
    );
    let within = env.post_twilio_callback(sms, None, "n3w", "SM8").await?;
    let before = env
        .post_twilio_callback(sms, None, TWILIO_TOKEN, "SM9")
        .await?;
    // Past the 5 s grace (with room for the receiver's clock).
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let after = env.post_twilio_callback(sms, None, "n3w", "SM10").await?;
    assert_eq!(
        (within, before, after),
        (200, 403, 403),
        "the replaced token within and after its grace, the one before"
    );

    // A leaked token: the rotation takes no grace.
    let (status, rotated) =
        rotate(json!({"credentials": token("n3w3st"), "grace_seconds": 0})).await?;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        rotated["previous_credentials_until"],
        Value::Null,
        "{rotated}"
    );
    // Past the 2 s of the last refusal's read: this rotation's notification is not needed.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // Callbacks signed with it come together, each refused by the copy the receiver holds
    // if the notification is late: they wait for the one read of the provider again, and
    // are all taken.
    let together: Vec<String> = (0..8).map(|i| format!("SM11-{i}")).collect();
    let answers = futures::future::join_all(
        together
            .iter()
            .map(|sid| env.post_twilio_callback(sms, None, "n3w3st", sid)),
    )
    .await;
    let answers: Vec<u16> = answers.into_iter().collect::<Result<_>>()?;
    assert_eq!(
        answers, [200; 8],
        "callbacks signed with the new token at once"
    );
    assert_eq!(
        env.post_twilio_callback(sms, None, "n3w3r", "SM12").await?,
        403,
        "the leaked token taken after a rotation with no grace"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_never_exceed_their_lines() -> Result<()> {
    let mut env =
        TestEnv::new(&["--call-duration-ms", "3000", "--receipt-delay", "fixed:20"]).await?;
    env.receiver().await?;
    let provider = env.twilio_provider("twilio_voice").await?;
    sqlx::query("UPDATE providers SET max_live_calls = 5 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let calls = 20;
    let campaign = env
        .campaign(tenant, provider, "calls", &numbers("+1555900", calls), 100)
        .await?;
    sqlx::query("UPDATE campaigns SET channel = 'voice' WHERE id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _w1 = env.worker(&[])?;
    let _w2 = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;
    wait_final_receipts(&env, campaign, Duration::from_secs(20)).await?;

    let stats = env.simulator_stats().await?;
    let most = stats["max_calls_live"].as_i64().unwrap_or(-1);
    assert!(
        (1..=5).contains(&most),
        "at most 5 calls live at the provider: {stats}"
    );
    assert_eq!(stats["accepted"], calls, "each call placed once: {stats}");
    let (states, deliveries) = tally(&env, campaign).await?;
    assert_eq!(states.get("sent"), Some(&(calls as i64)), "{states:?}");
    assert_eq!(
        deliveries.get("completed"),
        Some(&(calls as i64)),
        "{deliveries:?}"
    );
    assert_lines_freed(&env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_receipt_the_lost_answers_message_is_looked_up_not_resent() -> Result<()> {
    // No receiver: nothing reports on the messages whose answer was lost, so each waits out
    // its window and is then looked up in Twilio's message list before any second request.
    let env = TestEnv::new(&["--lose-rate", "0.3"]).await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    sqlx::query("UPDATE providers SET unknown_window_ms = 1000 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let total = 200;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555920", total), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;

    let stats = env.simulator_stats().await?;
    let lost = stats["answers_lost"].as_i64().unwrap_or(0);
    assert!(lost > 20, "answers were lost: {stats}");
    assert_eq!(
        stats["requests"], total,
        "no message was requested twice: {stats}"
    );
    assert_eq!(stats["duplicates"], 0, "{stats}");
    let (states, _) = tally(&env, campaign).await?;
    assert_eq!(states.get("sent"), Some(&(total as i64)), "{states:?}");
    // The looked-up ones carry the SID the list gave.
    let without_sid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND provider_message_id IS NULL",
    )
    .bind(campaign)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(without_sid, 0);
    assert!(
        worker
            .log_text()
            .contains("looked up an earlier request whose outcome was unknown"),
        "the worker looked them up"
    );
    Ok(())
}

/// P at the test's simulator (a window long enough for a test to move its campaign before
/// it ends), Q at a simulator of its own started with `q_args` (a window of 500 ms), and a
/// campaign of `recipients` numbers from `prefix` through P: (P, Q, Q's URL, campaign).
async fn through_p_then_q(
    env: &mut TestEnv,
    q_args: &[&str],
    prefix: &str,
    recipients: usize,
) -> Result<(Uuid, Uuid, String, Uuid)> {
    let q_url = env.extra_simulator(q_args).await?;
    let simulator = env.simulator_url.clone();
    let p = env
        .twilio_provider_at("p", "twilio_sms", &simulator)
        .await?;
    let q = env.twilio_provider_at("q", "twilio_sms", &q_url).await?;
    for (provider, window) in [(p, 600_000), (q, 500)] {
        sqlx::query("UPDATE providers SET unknown_window_ms = $2 WHERE id = $1")
            .bind(provider)
            .bind(window)
            .execute(&env.pool)
            .await?;
    }
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, p, "c", &numbers(prefix, recipients), 100)
        .await?;
    Ok((p, q, q_url, campaign))
}

/// Makes every waiting recipient of `campaign` due now.
async fn due_now(env: &TestEnv, campaign: Uuid) -> Result<()> {
    sqlx::query("UPDATE recipients SET next_attempt_at = now() WHERE campaign_id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    Ok(())
}

/// Makes `provider` one that deduplicates by key (`unknown_outcome = retry`), whose lost
/// answers are asked again after ten minutes, unless made due sooner (`due_now`).
async fn deduplicating_in_ten_minutes(env: &TestEnv, provider: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE providers SET unknown_outcome = 'retry', max_attempts = 5,
                              retry_base_ms = 600000, retry_max_ms = 600000 WHERE id = $1",
    )
    .bind(provider)
    .execute(&env.pool)
    .await?;
    Ok(())
}

/// Starts `campaign` and waits until all its `recipients` are `unknown`.
async fn started_until_all_unknown(env: &TestEnv, campaign: Uuid, recipients: usize) -> Result<()> {
    env.start(campaign).await?;
    let all_unknown = herald_tests::wait_until(Duration::from_secs(30), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.get("unknown") == Some(&(recipients as i64)))
    })
    .await;
    assert!(all_unknown.is_ok(), "{:?}", env.states(campaign).await?);
    Ok(())
}

/// Waits until all `recipients` of `campaign` wait again (`pending`) after an error that
/// begins with `error`.
async fn all_waiting_after(
    env: &TestEnv,
    campaign: Uuid,
    recipients: usize,
    error: &str,
) -> Result<()> {
    let pattern = format!("{error}%");
    let all = herald_tests::wait_until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND state = 'pending'
               AND last_error LIKE $2",
        )
        .bind(campaign)
        .bind(&pattern)
        .fetch_one(&env.pool)
        .await
        .is_ok_and(|n| n == recipients as i64)
    })
    .await;
    assert!(all.is_ok(), "{:?}", env.states(campaign).await?);
    Ok(())
}

/// Starts `campaign` and waits until all its `recipients` are `unknown` at its provider;
/// then moves it to `next` with those outcomes due at once, and waits for it to complete.
async fn unknown_then_sent_through(
    env: &TestEnv,
    campaign: Uuid,
    recipients: usize,
    next: Uuid,
) -> Result<()> {
    started_until_all_unknown(env, campaign, recipients).await?;
    sqlx::query("UPDATE campaigns SET provider_id = $2 WHERE id = $1")
        .bind(campaign)
        .bind(next)
        .execute(&env.pool)
        .await?;
    due_now(env, campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await
}

/// Two lost answers in a row, through two providers: the first request (at P) created
/// nothing, the second (at Q, after P's lookup found nothing) created a message whose answer
/// was lost too. The next lookup must ask Q, where that request went, not P again: asking P
/// finds nothing and sends a third message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lost_answer_is_looked_up_where_that_request_went() -> Result<()> {
    const RECIPIENTS: usize = 10; // fewer than P's breaker needs to judge
    // P: every request held 50 ms, then 504 (a gateway's timeout: nothing created).
    let mut env = TestEnv::new(&["--timeout-rate", "1", "--timeout-hold-ms", "50"]).await?;
    // Q: every request creates its message and loses the answer.
    let (_, q, q_url, campaign) =
        through_p_then_q(&mut env, &["--lose-rate", "1"], "+1555940", RECIPIENTS).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    // Then each is looked up at P (nothing there) and sent through Q, whose answer is lost.
    unknown_then_sent_through(&env, campaign, RECIPIENTS, q).await?;

    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    let at_p = env.simulator_stats().await?;
    assert_eq!(at_p["requests"], RECIPIENTS, "P: each once: {at_p}");
    let at_q = env.simulator_stats_at(&q_url).await?;
    assert_eq!(
        at_q["requests"], RECIPIENTS,
        "Q: each once, found there after: {at_q}"
    );
    // Each recorded with the SID Q's list gave, at Q.
    let found_at_q: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients
         WHERE campaign_id = $1 AND provider_message_id IS NOT NULL AND sent_via = $2",
    )
    .bind(campaign)
    .bind(q)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(found_at_q, RECIPIENTS as i64);
    Ok(())
}

/// A lost answer's message found by the lookup at P, the provider its request went to,
/// while the retry was routed to Q: it is P's send (its counts, its receipts), and Q is
/// never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_found_by_a_lookup_is_recorded_at_the_provider_that_sent_it() -> Result<()> {
    const RECIPIENTS: usize = 10;
    // P: every request creates its message and loses the answer.
    let mut env = TestEnv::new(&["--lose-rate", "1"]).await?;
    let (p, q, q_url, campaign) = through_p_then_q(&mut env, &[], "+1555950", RECIPIENTS).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    unknown_then_sent_through(&env, campaign, RECIPIENTS, q).await?;

    let at_p: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients
         WHERE campaign_id = $1 AND state = 'sent' AND sent_via = $2
           AND provider_message_id IS NOT NULL",
    )
    .bind(campaign)
    .bind(p)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(at_p, RECIPIENTS as i64, "{:?}", env.states(campaign).await?);
    let q_stats = env.simulator_stats_at(&q_url).await?;
    assert_eq!(q_stats["requests"], 0, "{q_stats}");
    Ok(())
}

/// Looking lost answers up keeps to the provider's rate limit, which counts lookups as it
/// counts sends (Twilio's limits are the account's): a recipient whose lookup finds nothing
/// makes two requests, and unpaced lookups beside the paced sends went over the limit (a
/// lookup refused 429 is tried again 30 s later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_keep_to_the_providers_rate_limit() -> Result<()> {
    // Fewer than the circuit breaker needs to judge: every first request fails.
    const RECIPIENTS: usize = 19;
    // Every first request is answered 504 (not taken, but Herald cannot know): 10 requests
    // a second at most, lists included.
    let env = TestEnv::new(&[]).await?;
    env.simulator_config(
        json!({"rate_limit": "10/1s", "timeout_rate": 1.0, "timeout_hold_ms": 100}),
    )
    .await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    // Paced below the simulator's limit; unknown outcomes wait until the test makes them due.
    sqlx::query(
        "UPDATE providers SET rate_limit = 8, rate_window_ms = 1000, unknown_window_ms = 600000
         WHERE id = $1",
    )
    .bind(provider)
    .execute(&env.pool)
    .await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555990", RECIPIENTS), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    let unknown = || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.get("unknown") == Some(&(RECIPIENTS as i64)))
    };
    if herald_tests::wait_until(Duration::from_secs(30), unknown)
        .await
        .is_err()
    {
        anyhow::bail!(
            "the outcomes are not all unknown: {:?}",
            env.states(campaign).await?
        );
    }
    // The provider answers again; past the first requests' window at the simulator, every
    // lookup (and the request after it) is due at once.
    env.simulator_config(json!({"timeout_rate": 0.0})).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    sqlx::query("UPDATE recipients SET next_attempt_at = now() WHERE campaign_id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["lookups"]["throttled"], 0, "{stats}");
    assert_eq!(
        stats["lookups"]["answered"], RECIPIENTS,
        "one lookup each: {stats}"
    );
    assert_eq!(stats["by_status"].get("429"), None, "{stats}");
    assert_eq!(stats["accepted"], RECIPIENTS, "one message each: {stats}");
    Ok(())
}

/// A lost answer at a provider that deduplicates requests by key (`unknown_outcome =
/// retry`) is asked again there, with the same key, even when the retry comes through
/// another provider's lane (the overflow's, while the first one's breaker is open): that one
/// knows nothing of the key, and sending through it sent each such recipient twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_at_a_deduplicating_provider_is_asked_again_there() -> Result<()> {
    const RECIPIENTS: usize = 5; // fewer than P's breaker needs to judge
    // P: takes every request and loses its answer; a repeated key replays the first answer.
    let mut env = TestEnv::new(&["--lose-rate", "1", "--honour-idempotency-keys"]).await?;
    let q_url = env.extra_simulator(&[]).await?;
    let p = env.create_provider(&env.provider()).await?;
    let mut at_q = env.provider();
    at_q.name = "q".into();
    at_q.endpoint = format!("{q_url}/v1/messages");
    let q = env.create_provider(&at_q).await?;
    deduplicating_in_ten_minutes(&env, p).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, p, "c", &numbers("+1555980", RECIPIENTS), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    let all_waiting = herald_tests::wait_until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND state = 'pending'
               AND attempts = 1",
        )
        .bind(campaign)
        .fetch_one(&env.pool)
        .await
        .is_ok_and(|n| n == RECIPIENTS as i64)
    })
    .await;
    assert!(all_waiting.is_ok(), "{:?}", env.states(campaign).await?);
    // P is down (503); the retries are routed to Q. Each is asked again at P, which does
    // not take it: it must still go to P after that, not to Q.
    env.simulator_config(json!({"lose_rate": 0.0, "outage": true}))
        .await?;
    sqlx::query("UPDATE campaigns SET provider_id = $2 WHERE id = $1")
        .bind(campaign)
        .bind(q)
        .execute(&env.pool)
        .await?;
    due_now(&env, campaign).await?;
    all_waiting_after(&env, campaign, RECIPIENTS, "HTTP 503").await?;
    // P answers again.
    env.simulator_config(json!({"outage": false})).await?;
    due_now(&env, campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;

    let sent_at_p: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND state = 'sent' AND sent_via = $2",
    )
    .bind(campaign)
    .bind(p)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        sent_at_p,
        RECIPIENTS as i64,
        "{:?}",
        env.states(campaign).await?
    );
    let q_stats = env.simulator_stats_at(&q_url).await?;
    assert_eq!(q_stats["requests"], 0, "Q is never asked: {q_stats}");
    // P was asked three times for each (lost, refused, replayed): it created each message
    // once.
    let p_stats = env.simulator_stats().await?;
    assert_eq!(p_stats["requests"], 3 * RECIPIENTS, "{p_stats}");
    assert_eq!(p_stats["accepted"], RECIPIENTS, "{p_stats}");
    assert_eq!(p_stats["duplicates"], RECIPIENTS, "{p_stats}");
    Ok(())
}

/// A provider that deduplicates by key remembers a key for about a day: a lost answer asked
/// again later (its campaign paused over a weekend) would meet a provider that took the key
/// for a new request. Such a recipient is failed, never asked again; a recent one is asked
/// again under its key as before. Asked regardless, the old ones were sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_not_asked_again_once_its_key_may_be_forgotten() -> Result<()> {
    const RECIPIENTS: usize = 4;
    let env = TestEnv::new(&["--lose-rate", "1", "--honour-idempotency-keys"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    deduplicating_in_ten_minutes(&env, provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555981", RECIPIENTS), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    all_waiting_after(&env, campaign, RECIPIENTS, "").await?;
    let ids = env.recipient_ids(campaign).await?;
    env.simulator_config(json!({"lose_rate": 0.0})).await?;
    // The first two lost their answers a day and an hour ago; all are due now.
    sqlx::query(
        "UPDATE recipients SET next_attempt_at = now(),
                outcome_unknown_at = CASE WHEN id = ANY($2)
                                          THEN outcome_unknown_at - interval '25 hours'
                                          ELSE outcome_unknown_at END
         WHERE campaign_id = $1 AND outcome_unknown_at IS NOT NULL",
    )
    .bind(campaign)
    .bind(&ids[..2])
    .execute(&env.pool)
    .await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;

    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT state, attempts FROM recipients WHERE campaign_id = $1 ORDER BY id")
            .bind(campaign)
            .fetch_all(&env.pool)
            .await?;
    let states: Vec<&str> = rows.iter().map(|(state, _)| state.as_str()).collect();
    assert_eq!(states, ["failed", "failed", "sent", "sent"], "{rows:?}");
    // One request each, and the recent ones' replayed under their keys: the provider
    // created each message once.
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], RECIPIENTS + 2, "{stats}");
    assert_eq!(stats["accepted"], RECIPIENTS, "{stats}");
    let errors: Vec<Option<String>> =
        sqlx::query_scalar("SELECT last_error FROM recipients WHERE id = ANY($1) ORDER BY id")
            .bind(&ids[..2])
            .fetch_all(&env.pool)
            .await?;
    for error in errors {
        assert!(
            error
                .as_deref()
                .unwrap_or_default()
                .contains("idempotency key"),
            "{error:?}"
        );
    }
    Ok(())
}

/// A lookup the provider does not answer says nothing about the recipient: it waits, no
/// attempt spent, and is looked up again once the provider is back (counted, five such
/// lookups failed a recipient of a provider that was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_the_provider_does_not_answer_spends_no_attempt() -> Result<()> {
    const RECIPIENTS: usize = 5;
    // Every request creates its message and loses the answer.
    let env = TestEnv::new(&["--lose-rate", "1"]).await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    sqlx::query("UPDATE providers SET unknown_window_ms = 600000, max_attempts = 2 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555970", RECIPIENTS), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    started_until_all_unknown(&env, campaign, RECIPIENTS).await?;

    // The provider out of reach (a new revision: workers read it again), the outcomes due.
    let set_endpoint = async |endpoint: &str| -> Result<()> {
        sqlx::query("UPDATE providers SET endpoint = $2, revision = revision + 1 WHERE id = $1")
            .bind(provider)
            .bind(endpoint)
            .execute(&env.pool)
            .await?;
        due_now(&env, campaign).await
    };
    set_endpoint("http://127.0.0.1:9").await?;
    let waiting = "cannot tell yet whether an earlier request was sent";
    all_waiting_after(&env, campaign, RECIPIENTS, waiting).await?;
    let counted: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT attempts - throttles FROM recipients WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(counted, [1], "the failed lookups were not counted");

    // Back: looked up again, found, sent; never a second request.
    set_endpoint(&env.simulator_url).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    assert_eq!(env.simulator_stats().await?["requests"], RECIPIENTS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_tell_fails_unknown_outcomes_when_its_policy_says_so() -> Result<()>
{
    // Every answer lost, no receipts, no lookup (a generic API): `fail` never risks a
    // second message, `retry` sends again at once (for a provider that honours the key).
    let env = TestEnv::new(&["--lose-rate", "1", "--honour-idempotency-keys"]).await?;
    let tenant = env.tenant("acme", 1).await?;
    let mut created = Vec::new();
    for policy in ["fail", "retry"] {
        let mut p = env.provider();
        p.name = policy.into();
        p.max_attempts = 2;
        p.retry_base_ms = 50;
        p.unknown_window_ms = 500;
        let provider = env.create_provider(&p).await?;
        sqlx::query("UPDATE providers SET unknown_outcome = $2 WHERE id = $1")
            .bind(provider)
            .bind(policy)
            .execute(&env.pool)
            .await?;
        let prefix = if policy == "fail" {
            "+1555930"
        } else {
            "+1555931"
        };
        created.push(
            env.campaign(tenant, provider, policy, &numbers(prefix, 5), 100)
                .await?,
        );
    }
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    for &campaign in &created {
        env.start(campaign).await?;
    }
    env.wait_completed(&created, Duration::from_secs(60))
        .await?;

    let fail = env.states(created[0]).await?;
    assert_eq!(fail.get("failed"), Some(&5), "{fail:?}");
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT last_error FROM recipients WHERE campaign_id = $1")
            .bind(created[0])
            .fetch_all(&env.pool)
            .await?;
    assert!(
        reasons.iter().all(|r| r.contains("not sent again")),
        "{reasons:?}"
    );
    // `retry` tried each twice at once (max_attempts), waited for a receipt after the last
    // (it may have been sent), and then gave up not knowing: a third lease, no request.
    let retry = env.states(created[1]).await?;
    assert_eq!(retry.get("failed"), Some(&5), "{retry:?}");
    let attempts: Vec<(i32, String)> = sqlx::query_as(
        "SELECT DISTINCT attempts, last_error FROM recipients WHERE campaign_id = $1",
    )
    .bind(created[1])
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(
        attempts,
        [(
            3,
            "the outcome of attempt 2 is unknown and no attempts are left".to_owned()
        )]
    );
    let stats = env.simulator_stats().await?;
    assert_eq!(
        stats["requests"], 15,
        "5 once for `fail`, 5 twice for `retry`: {stats}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_time_postgresql_cannot_store_is_dropped_not_the_receipt() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    // Signed, so the provider's own: a year chrono reads but PostgreSQL cannot store, beside
    // a plain one in the same body (and so in the same statement).
    let body = json!([
        {"id": "msg-odd", "status": "delivered", "timestamp": "-5000-01-01T00:00:00Z"},
        {"id": "msg-even", "status": "delivered", "timestamp": "2026-11-29T10:00:00Z"}
    ]);
    assert_eq!(
        post_generic(&env, provider, &body, SIMULATOR_WEBHOOK_SECRET).await?,
        200
    );
    let stored: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT message_id, provider_time FROM receipts ORDER BY message_id")
            .fetch_all(&env.pool)
            .await?;
    assert_eq!(
        stored,
        vec![
            ("msg-even".to_owned(), Some("2026-11-29T10:00:00Z".parse()?)),
            ("msg-odd".to_owned(), None),
        ]
    );

    // A receipt PostgreSQL refuses (here by a check this test's database alone has) fails
    // only itself: the other, in the same body and so the same statement, is stored.
    sqlx::query("ALTER TABLE receipts ADD CONSTRAINT no_poison CHECK (message_id <> 'poison')")
        .execute(&env.pool)
        .await?;
    let body =
        json!([{"id": "poison", "status": "delivered"}, {"id": "msg-fine", "status": "delivered"}]);
    assert_eq!(
        post_generic(&env, provider, &body, SIMULATOR_WEBHOOK_SECRET).await?,
        503,
        "the provider sends it again"
    );
    let fine: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts WHERE message_id = 'msg-fine'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(fine, 1, "the other receipt is stored");
    Ok(())
}

/// A tenant's cap on live calls holds across its campaigns and its providers, fleet-wide;
/// another tenant's calls are not held to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_calls_never_exceed_its_own_cap() -> Result<()> {
    let simulator = ["--call-duration-ms", "1500", "--receipt-delay", "fixed:20"];
    let mut env = TestEnv::new(&simulator).await?;
    env.receiver().await?;
    // Two providers of the capped tenant, both at the main simulator and neither capped
    // (`max_live_calls` NULL): the simulator counts the tenant's calls through both.
    let first = env
        .twilio_provider_at("voice one", "twilio_voice", &env.simulator_url)
        .await?;
    let second = env
        .twilio_provider_at("voice two", "twilio_voice", &env.simulator_url)
        .await?;
    // The other tenant calls through a simulator of its own, so each simulator counts one
    // tenant's calls.
    let other_url = env.extra_simulator(&simulator).await?;
    let other = env
        .twilio_provider_at("voice other", "twilio_voice", &other_url)
        .await?;
    let uncapped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM providers WHERE id = ANY($1) AND max_live_calls IS NULL",
    )
    .bind(vec![first, second, other])
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(uncapped, 3, "no provider caps its lines in this test");

    let capped = env.tenant("capped", 1).await?;
    sqlx::query("UPDATE tenants SET max_live_calls = 3 WHERE id = $1")
        .bind(capped)
        .execute(&env.pool)
        .await?;
    let free = env.tenant("free", 1).await?;
    let a = env
        .campaign(capped, first, "a", &numbers("+1555930", 6), 100)
        .await?;
    let b = env
        .campaign(capped, second, "b", &numbers("+1555931", 6), 100)
        .await?;
    let c = env
        .campaign(free, other, "c", &numbers("+1555932", 8), 100)
        .await?;
    let campaigns = [a, b, c];
    sqlx::query("UPDATE campaigns SET channel = 'voice' WHERE id = ANY($1)")
        .bind(campaigns.to_vec())
        .execute(&env.pool)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    // Two workers: the cap holds across the fleet, not per process.
    let _w1 = env.worker(&[])?;
    let _w2 = env.worker(&[])?;
    for campaign in campaigns {
        env.start(campaign).await?;
    }
    env.wait_completed(&campaigns, Duration::from_secs(60))
        .await?;
    for campaign in campaigns {
        wait_final_receipts(&env, campaign, Duration::from_secs(20)).await?;
    }

    let stats = env.simulator_stats().await?;
    let most = stats["max_calls_live"].as_i64().unwrap_or(-1);
    assert!(
        (1..=3).contains(&most),
        "at most 3 of the capped tenant's calls live at once, across its two providers: {stats}"
    );
    assert_eq!(stats["accepted"], 12, "each call placed once: {stats}");
    let others = env.simulator_stats_at(&other_url).await?;
    let others_most = others["max_calls_live"].as_i64().unwrap_or(-1);
    assert!(
        others_most > 3,
        "the uncapped tenant's calls were held to 3 (or never overlapped), so this test could \
         not tell a tenant's cap from a global one: {others}"
    );
    assert_eq!(others["accepted"], 8, "{others}");

    for (campaign, calls) in [(a, 6), (b, 6), (c, 8)] {
        let (states, deliveries) = tally(&env, campaign).await?;
        assert_eq!(states.get("sent"), Some(&calls), "{states:?}");
        assert_eq!(deliveries.get("completed"), Some(&calls), "{deliveries:?}");
    }
    assert_lines_freed(&env).await
}

/// A tenant's free lines are shared among its voice campaigns when a pass is planned: each
/// campaign's due count was cut to them alone, so ten campaigns over three lines were
/// claimed up to thirty calls a pass, and the worker held all but three back, claim after
/// claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_free_lines_are_shared_among_its_voice_campaigns() -> Result<()> {
    let simulator = ["--call-duration-ms", "1000", "--receipt-delay", "fixed:20"];
    let mut env = TestEnv::new(&simulator).await?;
    env.receiver().await?;
    let provider = env
        .twilio_provider_at("voice", "twilio_voice", &env.simulator_url)
        .await?;
    let tenant = env.tenant("capped", 1).await?;
    sqlx::query("UPDATE tenants SET max_live_calls = 3 WHERE id = $1")
        .bind(tenant)
        .execute(&env.pool)
        .await?;
    let mut campaigns = Vec::new();
    for k in 0..10 {
        let to = numbers(&format!("+155594{k}"), 3);
        campaigns.push(
            env.campaign(tenant, provider, &format!("c{k}"), &to, 100)
                .await?,
        );
    }
    sqlx::query("UPDATE campaigns SET channel = 'voice' WHERE id = ANY($1)")
        .bind(&campaigns)
        .execute(&env.pool)
        .await?;
    // Started before the scheduler runs, so that ten wakes do not each plan the lines
    // again before the first calls take them.
    for &campaign in &campaigns {
        env.start(campaign).await?;
    }
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.wait_completed(&campaigns, Duration::from_secs(90))
        .await?;

    let stats = env.simulator_stats().await?;
    assert_eq!(stats["accepted"], 30, "each call placed once: {stats}");
    let most = stats["max_calls_live"].as_i64().unwrap_or(-1);
    assert!((1..=3).contains(&most), "{stats}");
    // A call held back for want of a line waits again and is claimed again row by row,
    // which moves its fencing token on (a first claim, by range, does not): with the lines
    // shared, a few calls claimed while lines were being taken (3 in three runs); with each
    // campaign cut to them alone, 130.
    let claims: i64 = sqlx::query_scalar(
        "SELECT sum(dispatch_seq)::int8 FROM recipients WHERE campaign_id = ANY($1)",
    )
    .bind(&campaigns)
    .fetch_one(&env.pool)
    .await?;
    assert!(
        claims <= 30,
        "thirty calls over three lines were claimed again {claims} times"
    );
    Ok(())
}

/// A call's line is freed by a final status of the call that holds it, whichever receipt
/// of a batch ranks highest: a late `completed` of an earlier call beside the live call's
/// `busy` kept the line held until the sweeper's timeout (the batch's best receipt was the
/// earlier call's), and beside its `ringing` it must not free it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_is_freed_by_its_own_calls_final_status_in_any_batch() -> Result<()> {
    use herald_shared::delivery::DeliveryStatus;
    use herald_store::receipts::Receipt;
    let env = TestEnv::new(&[]).await?;
    let provider = env.twilio_provider("twilio_voice").await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555995", 2), 100)
        .await?;
    // Both on their second call (dispatch 2), each holding a line.
    sqlx::query(
        "UPDATE recipients SET state = 'sent', attempts = 2, dispatch_seq = 2, sent_via = $2,
                provider_message_id = 'CA' || id || '-2', sent_at = now(),
                live_until = now() + interval '1 hour'
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(provider)
    .execute(&env.pool)
    .await?;
    let ids = env.recipient_ids(campaign).await?;
    let receipt = |id: i64, seq: i32, status: DeliveryStatus| Receipt {
        provider_id: provider,
        message_id: format!("CA{id}-{seq}"),
        reference: Some((campaign, id)),
        seq: Some(seq),
        status,
        raw_status: status.as_str().to_owned(),
        error_code: None,
        error_message: None,
        provider_time: None,
    };
    herald_store::receipts::store(
        &env.pool,
        &[
            // The first: its live call was busy; its earlier call's completion came late.
            receipt(ids[0], 1, DeliveryStatus::Completed),
            receipt(ids[0], 2, DeliveryStatus::Busy),
            // The second: its live call rings.
            receipt(ids[1], 1, DeliveryStatus::Completed),
            receipt(ids[1], 2, DeliveryStatus::Ringing),
        ],
    )
    .await?;
    let held: Vec<bool> = sqlx::query_scalar(
        "SELECT live_until IS NOT NULL FROM recipients WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(held, vec![false, true]);
    Ok(())
}

/// The receiver reads providers not in its cache a few at a time: ids anyone may make up
/// wait for a turn, and are answered busy, instead of taking every connection of the pool
/// from the statement that stores real receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_provider_ids_take_turns_at_the_database() -> Result<()> {
    use herald_receiver::providers::{ProviderError, Providers};
    let env = TestEnv::new(&[]).await?;
    let providers = Providers::new(env.pool.clone(), Default::default());
    // Every read of the providers table waits while this transaction holds it.
    let mut hold = env.pool.begin().await?;
    sqlx::query("LOCK TABLE providers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await?;
    let reads: Vec<_> = (0..3)
        .map(|_| {
            let providers = providers.clone();
            tokio::spawn(async move { providers.get(Uuid::new_v4()).await })
        })
        .collect();
    // Two turns wait at the database; the third waits for a turn, and gives up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE '%FROM providers%'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(waiting, 2, "two reads at the database");
    hold.rollback().await?;
    let mut busy = 0;
    for read in reads {
        match read.await? {
            Ok(None) => {}
            Err(ProviderError::Busy) => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(busy, 1);
    Ok(())
}

/// A receipt for a message Herald never sent waits (parked), then is reported as an orphan:
/// counted once however often the provider repeats it, and listed only to the tenant whose
/// provider it came through (and to operators).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_that_never_finds_its_message_is_reported_as_an_orphan_to_its_tenant_only()
-> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let mut keys = Vec::new();
    for name in ["owner", "other"] {
        let (tenant, key) = admin.tenant_with_key(name).await?;
        keys.push((tenant.parse::<Uuid>()?, key));
    }
    let mut owned = env.provider();
    owned.tenant_id = Some(keys[0].0);
    let provider = env.create_provider(&owned).await?;

    let stray = json!({"id": "msg-nobody-sent", "status": "delivered"});
    for _ in 0..2 {
        assert_eq!(
            post_generic(&env, provider, &stray, SIMULATOR_WEBHOOK_SECRET).await?,
            200
        );
    }
    let receiver = env
        .scrape(env.receiver_service().context("receiver")?)
        .await?;
    for (result, count) in [("parked", 1.0), ("duplicate", 1.0)] {
        assert_eq!(
            metric_sum(
                &receiver,
                "herald_receipts_results_total",
                &[("result", result)]
            ),
            Some(count),
            "{result}"
        );
    }
    assert_eq!(
        metric_sum(
            &receiver,
            "herald_receipts_results_total",
            &[("result", "matched")]
        ),
        None
    );

    // Housekeeping keeps receipts every 30 rounds of the tick: every 3 s here.
    let scheduler = env.scheduler(100, &[("HERALD_RECEIPT_ORPHAN_AFTER_MS", "1000")])?;
    let listed = |key: String, query: &'static str| {
        let admin = &admin;
        async move {
            let (status, body) = admin
                .call(
                    &key,
                    reqwest::Method::GET,
                    &format!("/receipts/orphans{query}"),
                    None,
                )
                .await?;
            anyhow::ensure!(status == 200, "{status} {body}");
            Ok::<_, anyhow::Error>(
                body.as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|row| row["message_id"].as_str().unwrap_or_default().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            )
        }
    };
    let shown = herald_tests::wait_until(Duration::from_secs(20), || async {
        listed(keys[0].1.clone(), "")
            .await
            .is_ok_and(|rows| !rows.is_empty())
    })
    .await;
    assert!(shown.is_ok(), "never listed as an orphan");
    assert_eq!(
        listed(keys[0].1.clone(), "").await?,
        ["msg-nobody-sent"],
        "one row, not its copy"
    );
    assert_eq!(listed(op.clone(), "").await?, ["msg-nobody-sent"]);
    assert!(
        listed(keys[1].1.clone(), "").await?.is_empty(),
        "another tenant sees none"
    );
    let elsewhere = format!("?provider_id={}", Uuid::new_v4());
    let (status, body) = admin
        .call(
            &op,
            reqwest::Method::GET,
            &format!("/receipts/orphans{elsewhere}"),
            None,
        )
        .await?;
    assert_eq!((status, body), (200, json!([])), "filtered by provider");
    // Counted just after its statement commits; later rounds find nothing new.
    let counted = || async {
        let text = env.scrape(&scheduler).await.unwrap_or_default();
        metric_sum(&text, "herald_receipts_orphaned_total", &[])
    };
    let _ = herald_tests::wait_until(Duration::from_secs(5), || async {
        counted().await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(counted().await, Some(1.0), "counted once, its copy not");
    Ok(())
}

/// Five recipients of a provider that cannot be looked up (a generic API) and waits for
/// receipts, each request's answer lost (held past the timeout, then a 504: nothing
/// created), all waiting for word of later messages; with the scheduler and a worker whose
/// lease grace is short (a later message is one sent past a lost request's latest start, its
/// lease: the timeout and the grace, by 5 s). Returns the provider, its tenant, the campaign
/// and the services.
async fn answers_lost_at_a_silent_provider(
    env: &mut TestEnv,
) -> Result<(Uuid, Uuid, Uuid, [herald_tests::Service; 2])> {
    env.receiver().await?;
    let mut silent = env.provider();
    silent.timeout_ms = 1_000;
    silent.unknown_window_ms = 2_000;
    silent.max_attempts = 3;
    let provider = env.create_provider(&silent).await?;
    let tenant = env.tenant("acme", 1).await?;
    let first = env
        .campaign(
            tenant,
            provider,
            "first",
            &numbers("+1555990", SILENT_RECIPIENTS),
            100,
        )
        .await?;
    let scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[("HERALD_WORKER_LEASE_GRACE_MS", "1000")])?;
    env.start(first).await?;
    all_waiting_after(
        env,
        first,
        SILENT_RECIPIENTS,
        "no receipt for an earlier request",
    )
    .await?;
    Ok((provider, tenant, first, [scheduler, worker]))
}

const SILENT_RECIPIENTS: usize = 5;

/// The silent provider of [`answers_lost_at_a_silent_provider`] answers again, and a later
/// campaign of its tenant's starts there (its messages sent and reported on).
async fn later_messages(env: &TestEnv, tenant: Uuid, provider: Uuid) -> Result<Uuid> {
    env.simulator_config(json!({"timeout_rate": 0.0})).await?;
    let later = env
        .campaign(
            tenant,
            provider,
            "later",
            &numbers("+1555991", SILENT_RECIPIENTS),
            100,
        )
        .await?;
    env.start(later).await?;
    Ok(later)
}

/// A provider that cannot be looked up (a generic API, WhatsApp) and waits for receipts:
/// after its window, a lost answer's silence is read as "not sent" only once the provider
/// has reported on later messages. While it reports on none (its receipts held up, or
/// nothing else sent), the recipient waits, no attempt spent, never sent again; once
/// receipts for later messages come, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_sent_again_only_once_its_provider_reports_on_later_messages() -> Result<()>
{
    const RECIPIENTS: usize = SILENT_RECIPIENTS;
    let mut env = TestEnv::new(&["--timeout-rate", "1", "--timeout-hold-ms", "3000"]).await?;
    let (provider, tenant, first, _services) = answers_lost_at_a_silent_provider(&mut env).await?;
    // Past the 7 s after which a message counts as later, still waiting: asked once each,
    // no attempt spent on the waits.
    tokio::time::sleep(Duration::from_secs(6)).await;
    all_waiting_after(&env, first, RECIPIENTS, "no receipt for an earlier request").await?;
    assert_eq!(env.simulator_stats().await?["requests"], RECIPIENTS);
    let counted: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT attempts - throttles FROM recipients WHERE campaign_id = $1",
    )
    .bind(first)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(counted, [1], "the waits were not counted");

    // The provider answers again; a later campaign's messages are sent and reported on.
    let later = later_messages(&env, tenant, provider).await?;
    env.wait_completed(&[first, later], Duration::from_secs(60))
        .await?;
    for campaign in [first, later] {
        let states = env.states(campaign).await?;
        assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    }
    let stats = env.simulator_stats().await?;
    // The first campaign's requests twice (held, then sent), the later one's once.
    assert_eq!(stats["requests"], 3 * RECIPIENTS, "{stats}");
    assert_eq!(stats["accepted"], 2 * RECIPIENTS, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}

/// As above, but a webhook of the provider's was refused after the lost requests (here a
/// signed body the receiver cannot read; as well a 503 when it has no room or no
/// database): the provider sends it again later, and it may hold a lost request's receipt.
/// Receipts for later messages then prove nothing of the lost ones, which keep waiting
/// (and are given up on, not sent again, if their receipts never come). Read as before, each
/// was sent a second time within seconds of the later messages' receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_not_sent_again_while_a_refused_webhook_may_hold_its_receipt() -> Result<()>
{
    let mut env = TestEnv::new(&["--timeout-rate", "1", "--timeout-hold-ms", "3000"]).await?;
    let (provider, tenant, first, _services) = answers_lost_at_a_silent_provider(&mut env).await?;
    // Past the 7 s after which a message counts as later.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let refused = post_signed(
        &reqwest::Client::new(),
        &generic_url(&env, provider),
        "{\"receipts\": [{\"message_id\": ".to_owned(),
        SIMULATOR_WEBHOOK_SECRET,
    )
    .await?;
    assert_eq!(refused, 400);
    not_sent_again_after_later_receipts(&env, provider, tenant, first).await
}

/// As above, but no webhook was refused: the provider posted a receipt, after the lost
/// requests, that names only its own message id (a provider whose receipts carry no
/// reference), an id no send of Herald's recorded: it may be a lost request's (whose answer,
/// with that id, never came). It stays parked, and receipts for later messages prove
/// nothing of the lost ones. Read as before, each was sent a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_not_sent_again_while_a_receipt_of_its_providers_matches_nothing()
-> Result<()> {
    let mut env = TestEnv::new(&["--timeout-rate", "1", "--timeout-hold-ms", "3000"]).await?;
    let (provider, tenant, first, _services) = answers_lost_at_a_silent_provider(&mut env).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let unmatched = json!({"id": "msg-of-a-lost-answer", "status": "sent"});
    assert_eq!(
        post_generic(&env, provider, &unmatched, SIMULATOR_WEBHOOK_SECRET).await?,
        200
    );
    // Past two of the receiver's writes of refusals (once a second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let refused: bool =
        sqlx::query_scalar("SELECT receipts_refused_at IS NOT NULL FROM providers WHERE id = $1")
            .bind(provider)
            .fetch_one(&env.pool)
            .await?;
    assert!(
        !refused,
        "nothing refused: the parked receipt alone holds them"
    );
    not_sent_again_once_later_messages_are_reported(&env, provider, tenant, first).await
}

/// Once `provider`'s refusal is recorded (within a second or so), a later campaign of
/// `tenant`'s is sent and reported on there; the lost requests of `first` still wait,
/// none sent again.
async fn not_sent_again_after_later_receipts(
    env: &TestEnv,
    provider: Uuid,
    tenant: Uuid,
    first: Uuid,
) -> Result<()> {
    herald_tests::wait_until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT receipts_refused_at IS NOT NULL FROM providers WHERE id = $1",
        )
        .bind(provider)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(false)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the refusal was not recorded"))?;
    not_sent_again_once_later_messages_are_reported(env, provider, tenant, first).await
}

/// A later campaign of `tenant`'s is sent and reported on at `provider`; the lost requests
/// of `first` still wait, none sent again.
async fn not_sent_again_once_later_messages_are_reported(
    env: &TestEnv,
    provider: Uuid,
    tenant: Uuid,
    first: Uuid,
) -> Result<()> {
    let later = later_messages(env, tenant, provider).await?;
    env.wait_completed(&[later], Duration::from_secs(60))
        .await?;
    // Two looks at the receipts after theirs came (each 10 s apart): none sent again.
    let resent = herald_tests::wait_until(Duration::from_secs(25), || async {
        env.states(first)
            .await
            .is_ok_and(|s| s.get("sent").copied().unwrap_or(0) > 0)
    })
    .await;
    assert!(resent.is_err(), "{:?}", env.states(first).await?);
    all_waiting_after(
        env,
        first,
        SILENT_RECIPIENTS,
        "no receipt for an earlier request",
    )
    .await?;
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], 2 * SILENT_RECIPIENTS, "{stats}");
    Ok(())
}

/// As above, but no webhook was refused: the receiver was down a moment (killed, started
/// again) after the lost requests. While none listened the provider's webhooks went
/// unanswered, and it sends them again later; a receiver's start so counts as a refusal of
/// every provider that cannot be asked. Read as before, each lost request was sent a second
/// time once receipts of later messages came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_not_sent_again_after_the_receiver_was_down() -> Result<()> {
    let mut env = TestEnv::new(&["--timeout-rate", "1", "--timeout-hold-ms", "3000"]).await?;
    let (provider, tenant, first, _services) = answers_lost_at_a_silent_provider(&mut env).await?;
    // Past the 7 s after which a message counts as later.
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.restart_receiver().await?;
    not_sent_again_after_later_receipts(&env, provider, tenant, first).await
}

/// Anyone can reach the receiver before a signature is checked, so nobody holds a part of
/// it for long: a connection that says nothing, or trickles its request head, is closed; a
/// body that does not come whole in time is answered 408, however it trickles; past the
/// requests handled at once, the next is answered 503 with `Retry-After` at once, and the
/// health check still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_slow_caller_cannot_hold_the_receiver() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = TestEnv::new(&[]).await?;
    let receiver = env
        .receiver_with(&[
            ("HERALD_RECEIVER_HEAD_TIMEOUT_MS", "2000"),
            ("HERALD_RECEIVER_BODY_TIMEOUT_MS", "2000"),
            ("HERALD_RECEIVER_MAX_REQUESTS", "2"),
        ])
        .await?;
    let address = receiver.trim_start_matches("http://").to_owned();
    let path = format!("/webhooks/http/{}", Uuid::new_v4());
    let open = |head: String| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            stream.write_all(head.as_bytes()).await?;
            Ok::<_, anyhow::Error>(stream)
        }
    };
    // What the connection answers until it is closed, and how long after it was opened
    // (`None` if it was still open after 10 s).
    let until_closed = |mut stream: tokio::net::TcpStream, trickle: bool| async move {
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let read = async {
            if trickle {
                // A byte of body every 500 ms: each within any per-chunk timer.
                while stream.write_all(b" ").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let mut byte = [0u8; 1];
                    let answered =
                        tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut byte));
                    if let Ok(Ok(n)) = answered.await
                        && n > 0
                    {
                        break;
                    }
                }
            }
            stream.read_to_end(&mut answer).await
        };
        let closed = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .ok()
            .map(|_| started.elapsed());
        (String::from_utf8_lossy(&answer).into_owned(), closed)
    };

    // Silent, and a head cut short: both closed once the head's time is up.
    let silent = tokio::spawn(until_closed(open(String::new()).await?, false));
    let cut_short = tokio::spawn(until_closed(
        open(format!("POST {path} HTTP/1.1\r\nHost: x\r\n")).await?,
        false,
    ));
    // Two bodies of which a byte comes every 500 ms take the receiver's two places.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{"
    );
    let slow = [
        tokio::spawn(until_closed(open(head.clone()).await?, true)),
        tokio::spawn(until_closed(open(head).await?, true)),
    ];
    // Both heads in (parsed at once), the two places are taken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fresh connection for each request: none is reused after the receiver closed it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let busy = async {
        loop {
            let answer = http
                .post(format!("{receiver}{path}"))
                .body("{}")
                .send()
                .await?;
            if answer.status() == 503 {
                return Ok::<_, anyhow::Error>(answer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let busy = tokio::time::timeout(Duration::from_millis(1_500), busy)
        .await
        .context("no 503 while two requests held both places")??;
    assert_eq!(
        busy.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let health = http.get(format!("{receiver}/healthz")).send().await?;
    assert_eq!(health.status(), 200, "the health check is not shed");

    for (what, handle) in [("silent", silent), ("cut short", cut_short)] {
        let (answer, closed) = handle.await?;
        let closed = closed.with_context(|| format!("{what}: still open after 10 s"))?;
        assert!(
            closed < Duration::from_secs(5),
            "{what}: closed after {closed:?}"
        );
        assert!(!answer.starts_with("HTTP/1.1 2"), "{what}: {answer}");
    }
    for handle in slow {
        let (answer, closed) = handle.await?;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a trickled body: {answer}"
        );
        assert!(
            closed.is_some_and(|c| c < Duration::from_secs(5)),
            "a trickled body's connection: {closed:?}"
        );
    }
    // Their places are free again: the next request is handled (an unknown provider).
    let after = http
        .post(format!("{receiver}{path}"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(after.status(), 404);
    let service = env.receiver_service().context("the receiver runs")?;
    let metrics = env.scrape(service).await?;
    for (reason, least) in [("head_timeout", 2.0), ("body_timeout", 2.0), ("busy", 1.0)] {
        let counted = metric_sum(&metrics, "herald_http_refused_total", &[("reason", reason)]);
        assert!(counted.is_some_and(|n| n >= least), "{reason}: {counted:?}");
    }
    Ok(())
}

/// A tenant posting 1,000-receipt bodies as fast as it likes, signed with its own provider's
/// secret, does not hold up another owner's receipts: each statement's batch is shared out
/// among the owners with receipts waiting, and an owner with too many waiting is answered
/// 503 at once. In arrival order, every receipt of the other provider waited behind tens of
/// thousands of the flood's, seconds (Twilio gives up on a callback after 15 s and does not
/// send it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_its_own_webhook_holds_no_other_receipt_up() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let flooder = env.tenant("flooder", 1).await?;
    let mut own = env.provider();
    own.name = "flooders-own".into();
    own.tenant_id = Some(flooder);
    let flooding = env.create_provider(&own).await?;
    let other = env.create_provider(&env.provider()).await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u16, u64>::new()));
    let url = generic_url(&env, flooding);
    let mut floods = Vec::new();
    for connection in 0..64 {
        let (http, url, stop, answers) =
            (env.http.clone(), url.clone(), stop.clone(), answers.clone());
        floods.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = Value::Array(
                    (0..1_000)
                        .map(|i| json!({"id": format!("flood-{connection}-{round}-{i}"), "status": "delivered"}))
                        .collect(),
                )
                .to_string();
                round += 1;
                let status = post_signed(&http, &url, body, SIMULATOR_WEBHOOK_SECRET)
                    .await
                    .unwrap_or(0);
                *answers.lock().unwrap().entry(status).or_default() += 1;
                if status == 503 {
                    // As its Retry-After asks.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
    }
    // The flood under way, the other provider's receipts come one at a time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut waits = Vec::new();
    for i in 0..30 {
        let body = json!({"id": format!("quiet-{i}"), "status": "delivered"});
        let asked = std::time::Instant::now();
        let status = post_generic(&env, other, &body, SIMULATOR_WEBHOOK_SECRET).await?;
        waits.push((status, asked.elapsed()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flood in floods {
        flood.await?;
    }
    let answers = answers.lock().unwrap().clone();
    assert!(
        answers.get(&200).is_some_and(|&n| n > 0),
        "the flood was stored too: {answers:?}"
    );
    assert!(waits.iter().all(|(status, _)| *status == 200), "{waits:?}");
    let slowest = waits
        .iter()
        .map(|(_, wait)| *wait)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "the other provider's receipts waited up to {slowest:?} behind the flood ({answers:?})"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts WHERE provider_id = $1")
        .bind(other)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(stored, 30);
    Ok(())
}

/// Receipts that raced past their send (parked just before the worker's outcome recorded its
/// message id, neither seeing the other) are adopted however late: after a scheduler that
/// was away for hours, more of them than one adoption takes, or ones older than it looks
/// back. They used to be orphaned for good once parked an hour, their recipient's delivery
/// status never told. Of a provider's copies of a receipt, the first one's error code is
/// the one applied, whichever copy the adoption reads first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_raced_past_their_send_are_adopted_however_late() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let (_, recipient) = leased_recipient(&env, provider, "+15556170001").await?;
    let failed = |code: &str| json!({"id": "msg-raced", "status": "failed", "error_code": code});
    for body in [failed("30003"), failed("30005")] {
        assert_eq!(
            post_generic(&env, provider, &body, SIMULATOR_WEBHOOK_SECRET).await?,
            200
        );
    }
    // The send recorded as if by an outcome statement that ran beside the receipts' (it
    // found nothing parked), and the receipts three hours old, the copy read first.
    sqlx::query(
        "UPDATE recipients SET state = 'sent', provider_message_id = 'msg-raced',
                sent_at = now(), lease_until = NULL, lease_token = NULL
         WHERE id = $1",
    )
    .bind(recipient)
    .execute(&env.pool)
    .await?;
    let parked = sqlx::query_scalar::<_, i32>(
        "UPDATE receipts SET received_at = now() - CASE WHEN duplicate THEN interval '4 hours'
                                                          ELSE interval '3 hours' END
         WHERE message_id = 'msg-raced' AND recipient_id IS NULL RETURNING 1",
    )
    .fetch_all(&env.pool)
    .await?
    .len();
    assert_eq!(parked, 2, "both copies parked");

    // Housekeeping keeps receipts every 30 rounds of the tick: every 3 s here.
    let _scheduler = env.scheduler(100, &[("HERALD_RECEIPT_ORPHAN_AFTER_MS", "1000")])?;
    herald_tests::wait_until(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT count(*) = 0 FROM receipts WHERE message_id = 'msg-raced'
               AND recipient_id IS NULL AND orphaned_at IS NULL",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap_or(false)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the receipts were neither adopted nor orphaned"))?;
    let receipts: Vec<(Option<i64>, bool)> = sqlx::query_as(
        "SELECT recipient_id, orphaned_at IS NOT NULL FROM receipts WHERE message_id = 'msg-raced'",
    )
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(
        receipts,
        vec![(Some(recipient), false); 2],
        "adopted, not orphaned"
    );
    let delivery: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT delivery_status, delivery_error FROM recipients WHERE id = $1")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(
        delivery,
        (Some("failed".into()), Some("30003".into())),
        "the first copy's code"
    );
    Ok(())
}

/// What a provider's receipts say of a lost answer (`receipts_since`), against its record
/// of refused webhooks: a refusal since the request, of the last 15 minutes, holds it back;
/// one before the request, or older than that (the provider has sent it again by then), does
/// not. A WhatsApp provider's refusal counts for its owner's other WhatsApp providers (one
/// app posts all its numbers' statuses to one of them), not for another owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_webhooks_hold_back_resends_for_a_while_and_for_the_owners_numbers() -> Result<()> {
    use herald_store::recipients::reconcile::receipts_since;
    let env = TestEnv::new(&[]).await?;
    let (acme, globex) = (env.tenant("acme", 1).await?, env.tenant("globex", 1).await?);
    let whatsapp = |tenant: Uuid, name: &'static str| {
        sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO providers (tenant_id, name, kind, endpoint, timeout_ms, max_in_flight)
             VALUES ($1, $2, 'whatsapp', 'https://graph.facebook.com', 2000, 100) RETURNING id",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&env.pool)
    };
    let (first, second, theirs) = (
        whatsapp(acme, "number-1").await?,
        whatsapp(acme, "number-2").await?,
        whatsapp(globex, "other-app").await?,
    );
    // Receipts flow: each provider has reported on messages sent up to now.
    sqlx::query("UPDATE providers SET sends_reported_until = now()")
        .execute(&env.pool)
        .await?;
    let minutes_ago =
        |m: i64| chrono::Utc::now() - chrono::Duration::try_minutes(m).unwrap_or_default();
    let margin = Duration::from_secs(5);
    let asked = |provider: Uuid, since_minutes: i64| {
        receipts_since(&env.pool, provider, minutes_ago(since_minutes), margin)
    };
    let lost = asked(first, 20).await?;
    assert!(lost.reported_on_later && !lost.refused_since, "{lost:?}");

    herald_store::receipts::note_refused(&env.pool, &[first], &[minutes_ago(10)]).await?;
    // Refused 10 minutes ago: after a request of 20 minutes ago, within 15 minutes.
    assert!(asked(first, 20).await?.refused_since);
    assert!(
        asked(second, 20).await?.refused_since,
        "the owner's other number"
    );
    assert!(
        !asked(theirs, 20).await?.refused_since,
        "another owner's provider"
    );
    // Before a request of 5 minutes ago: not its receipt.
    assert!(!asked(first, 5).await?.refused_since);

    // The latest is kept: an older refusal noted later changes nothing.
    herald_store::receipts::note_refused(&env.pool, &[first], &[minutes_ago(30)]).await?;
    assert!(asked(first, 20).await?.refused_since);
    // Sixteen minutes on, the provider has sent the refused webhook again.
    sqlx::query("UPDATE providers SET receipts_refused_at = now() - interval '16 minutes'")
        .execute(&env.pool)
        .await?;
    assert!(!asked(first, 20).await?.refused_since);
    Ok(())
}

/// Two WhatsApp providers of one tenant on one phone number (one a template: a provider
/// holds one), one Meta app posting every status of the number to the first one's URL: a
/// status of a message the second sent settles it, kept as the second's. It was kept as the
/// first's, matched no recipient (the first is not the campaign's provider), stayed parked
/// and was orphaned: the recipient never delivered, its lost answers never settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_status_reaches_the_provider_of_its_number_that_sent_it() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let receiver = env.receiver().await?;
    let credentials = json!({"access_token": "EAAG", "app_secret": SIMULATOR_APP_SECRET});
    let first = provider(
        &env,
        "whatsapp",
        json!({"phone_number_id": "5055"}),
        credentials.clone(),
    )
    .await?;
    let second = provider(
        &env,
        "whatsapp",
        json!({"phone_number_id": "5055",
               "template": {"name": "order_update", "language": "en"}}),
        credentials,
    )
    .await?;
    // A third on another number of the same app: not a sibling of this number's.
    let elsewhere = provider(
        &env,
        "whatsapp",
        json!({"phone_number_id": "6066"}),
        json!({"access_token": "EAAG", "app_secret": SIMULATOR_APP_SECRET}),
    )
    .await?;
    let (campaign, recipient) = leased_recipient(&env, second, "+15557400001").await?;
    let (other_campaign, other_recipient) =
        leased_recipient(&env, elsewhere, "+15557400002").await?;
    let status = |campaign: Uuid, recipient: i64, wamid: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"metadata": {"phone_number_id": "5055"},
             "statuses": [{"id": wamid, "status": "delivered", "timestamp": "1785000000",
                           "recipient_id": "15557400001",
                           "biz_opaque_callback_data": format!("herald-{}-{recipient}", campaign.simple())}]}}]}]})
        .to_string()
    };
    let post = |body: String| {
        let signature = signature::hub(SIMULATOR_APP_SECRET, body.as_bytes());
        env.http
            .post(format!("{receiver}/webhooks/whatsapp/{first}"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    assert_eq!(
        post(status(campaign, recipient, "wamid.S1"))
            .await?
            .status(),
        200
    );
    let settled: (String, Option<String>) =
        sqlx::query_as("SELECT state, delivery_status FROM recipients WHERE id = $1")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(settled, ("sent".into(), Some("delivered".into())));
    let kept_as: Uuid =
        sqlx::query_scalar("SELECT provider_id FROM receipts WHERE message_id = 'wamid.S1'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(kept_as, second, "kept as the provider that sent it");
    // A status of this number naming a message another number's provider sent is no
    // sibling's: it settles nothing.
    assert_eq!(
        post(status(other_campaign, other_recipient, "wamid.S2"))
            .await?
            .status(),
        200
    );
    let untouched: String = sqlx::query_scalar("SELECT state FROM recipients WHERE id = $1")
        .bind(other_recipient)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(untouched, "sending");
    Ok(())
}

/// A body no provider sends (larger than any webhook of its API) is refused before any
/// signature is checked, and noted as no provider's refusal: anyone may post one naming any
/// provider, and each noted held the provider's lost answers back. A Twilio callback is
/// read only up to 64 KiB: 4 MiB of `a&a&…` made two million fields before the signature
/// was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_no_provider_sends_is_refused_unread_and_noted_for_none() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let receiver = env.receiver().await?;
    let sms = env.twilio_provider("twilio_sms").await?;
    let whatsapp = provider(
        &env,
        "whatsapp",
        json!({"phone_number_id": "7077"}),
        json!({"access_token": "EAAG", "app_secret": SIMULATOR_APP_SECRET}),
    )
    .await?;
    let flood = "a&".repeat(40 * 1024);
    let answer = env
        .http
        .post(format!("{receiver}/webhooks/twilio/{sms}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "forged")
        .body(flood)
        .send()
        .await?;
    assert_eq!(answer.status(), 413);
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let answer = env
        .http
        .post(format!("{receiver}/webhooks/whatsapp/{whatsapp}"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await?;
    assert_eq!(answer.status(), 413);
    // Past two of the receiver's writes of refusals (once a second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let noted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM providers WHERE id = ANY($1) AND receipts_refused_at IS NOT NULL",
    )
    .bind(vec![sms, whatsapp])
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        noted, 0,
        "a body no provider sends was noted as its refusal"
    );
    Ok(())
}
