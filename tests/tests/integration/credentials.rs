//! Provider credentials sealed at rest: with `HERALD_CREDENTIALS_KEY` the database holds no
//! usable secret, workers that have the key send with them, and a key rotation
//! (`herald-admin credentials reseal`) moves every provider to the new key.

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_tests::{TWILIO_SID, TestEnv, numbers};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "s3aled-auth-t0ken";
const NEW_TOKEN: &str = "r0tated-auth-t0ken";

fn key(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

async fn stored(env: &TestEnv, provider: &str) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT credentials::text FROM providers WHERE id = $1::uuid")
            .bind(provider)
            .fetch_one(&env.pool)
            .await?,
    )
}

/// Sends a campaign of `n` through `provider` with a worker holding `keys`.
async fn send(
    env: &TestEnv,
    tenant: uuid::Uuid,
    provider: &str,
    name: &str,
    prefix: &str,
    keys: &[(&str, &str)],
) -> Result<std::collections::BTreeMap<String, i64>> {
    let provider: uuid::Uuid = provider.parse()?;
    let campaign = env
        .campaign(tenant, provider, name, &numbers(prefix, 20), 100)
        .await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(keys)?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    env.states(campaign).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sealed_at_rest_and_rotate_with_the_key() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let (old, new) = (key(1), key(2));
    let admin = env
        .admin_with(&[("HERALD_CREDENTIALS_KEY", old.as_str())])
        .await?;
    let provider = admin
        .ok(
            &admin.operator_key,
            Method::POST,
            "/providers",
            Some(
                json!({"name": "twilio", "kind": "twilio_sms", "endpoint": env.simulator_url,
                        "settings": {"from": "+15005550006"},
                        "credentials": {"account_sid": TWILIO_SID, "auth_token": TOKEN}}),
            ),
        )
        .await?;
    assert_eq!(provider["has_credentials"], true);
    let id = provider["id"].as_str().unwrap_or_default().to_owned();
    let at_rest = stored(&env, &id).await?;
    assert!(
        !at_rest.contains(TOKEN),
        "the token is in the database: {at_rest}"
    );
    assert!(!at_rest.contains(TWILIO_SID), "{at_rest}");
    assert!(at_rest.contains("\"sealed\""), "{at_rest}");

    // A worker with the key sends with the real token.
    let tenant = env.tenant("acme", 1).await?;
    let states = send(
        &env,
        tenant,
        &id,
        "first",
        "+1555710",
        &[("HERALD_CREDENTIALS_KEY", old.as_str())],
    )
    .await?;
    assert_eq!(states.get("sent"), Some(&20), "{states:?}");
    let accepted = env.simulator_accepted().await?;
    let some_key = accepted.keys().next().cloned().unwrap_or_default();
    let seen = env.simulator_requests(&some_key).await?;
    let basic = format!("Basic {}", STANDARD.encode(format!("{TWILIO_SID}:{TOKEN}")));
    assert_eq!(
        seen[0]["headers"]["authorization"],
        Value::String(basic),
        "{seen}"
    );

    // The provider's own token rotated: the one replaced still signs receipts for a day,
    // sealed as the one in use is.
    admin
        .ok(
            &admin.operator_key,
            Method::PUT,
            &format!("/providers/{id}/credentials"),
            Some(json!({"credentials": {"account_sid": TWILIO_SID, "auth_token": NEW_TOKEN}})),
        )
        .await?;
    let previous: String =
        sqlx::query_scalar("SELECT previous_credentials::text FROM providers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&env.pool)
            .await?;
    assert!(
        !previous.contains(TOKEN) && previous.contains("\"sealed\""),
        "{previous}"
    );

    // Key rotation: reseal with the new key (the old one still opens what it sealed)...
    let reseal = |env: &TestEnv, env_vars: &[(&str, &str)]| {
        let mut all = vec![("HERALD_DATABASE_URL", env.database_url.as_str())];
        all.extend_from_slice(env_vars);
        env.run_binary("herald-admin", &["credentials", "reseal"], &all)
    };
    let out = reseal(
        &env,
        &[
            ("HERALD_CREDENTIALS_KEY", new.as_str()),
            ("HERALD_CREDENTIALS_OLD_KEYS", old.as_str()),
        ],
    )?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 providers, 1 resealed"),
        "{out:?}"
    );
    let resealed = stored(&env, &id).await?;
    assert_ne!(resealed, at_rest);
    assert!(!resealed.contains(TOKEN));
    // ...after which the new key alone is enough, and the old one no longer opens them.
    let states = send(
        &env,
        tenant,
        &id,
        "second",
        "+1555720",
        &[("HERALD_CREDENTIALS_KEY", new.as_str())],
    )
    .await?;
    assert_eq!(states.get("sent"), Some(&20), "{states:?}");
    // The replaced token's seal moved too: a receiver with the new key alone takes receipts
    // signed with either token.
    env.receiver_with(&[("HERALD_CREDENTIALS_KEY", new.as_str())])
        .await?;
    let provider_id: uuid::Uuid = id.parse()?;
    for (token, sid) in [(NEW_TOKEN, "SM1"), (TOKEN, "SM2")] {
        assert_eq!(
            env.post_twilio_callback(provider_id, None, token, sid)
                .await?,
            200,
            "a receipt signed with {token} refused"
        );
    }
    let out = reseal(&env, &[("HERALD_CREDENTIALS_KEY", old.as_str())])?;
    assert!(
        !out.status.success(),
        "resealed without the key that sealed them"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HERALD_CREDENTIALS_OLD_KEYS"),
        "{out:?}"
    );
    // A bad key is refused at start, naming the variable.
    let out = reseal(&env, &[("HERALD_CREDENTIALS_KEY", "short")])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HERALD_CREDENTIALS_KEY"),
        "{out:?}"
    );

    // Every key lost: new credentials, sealed with a new key, replace the ones no key opens,
    // which are not kept (nothing could check a signature with them), and a reseal with the
    // new key alone has nothing left to stumble on.
    let lost = key(3);
    let admin = env
        .admin_with(&[("HERALD_CREDENTIALS_KEY", lost.as_str())])
        .await?;
    let rotated = admin
        .ok(
            &admin.operator_key,
            Method::PUT,
            &format!("/providers/{id}/credentials"),
            Some(json!({"credentials": {"account_sid": TWILIO_SID, "auth_token": TOKEN}})),
        )
        .await?;
    assert_eq!(
        rotated["previous_credentials_until"],
        Value::Null,
        "{rotated}"
    );
    let out = reseal(&env, &[("HERALD_CREDENTIALS_KEY", lost.as_str())])?;
    assert!(out.status.success(), "{out:?}");
    Ok(())
}
