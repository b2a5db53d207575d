//! API keys are revoked and rotated through the API and the CLI: a revoked key stops working
//! at once, a rotated one after its grace, and a tenant manages only its own keys.

use anyhow::Result;
use herald_tests::TestEnv;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

async fn tenant_key(admin: &herald_tests::Admin, tenant: &str, name: &str) -> Result<Value> {
    admin
        .ok(
            &admin.operator_key,
            Method::POST,
            &format!("/tenants/{tenant}/keys"),
            Some(json!({"name": name})),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_revoked_and_rotated() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let (acme, acme_key, _) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    let (_, globex_key, _) = admin
        .tenant_with_provider("globex", &env.simulator_url)
        .await?;
    let spare = tenant_key(&admin, &acme, "spare").await?;
    let spare_id = spare["id"].as_str().unwrap_or_default().to_owned();
    let spare_key = spare["key"].as_str().unwrap_or_default().to_owned();
    let works = |key: &str| {
        let key = key.to_owned();
        let admin = &admin;
        async move {
            admin
                .call(&key, Method::GET, "/campaigns", None)
                .await
                .map(|(status, _)| status)
        }
    };
    assert_eq!(works(&spare_key).await?, 200);

    // A tenant lists only its own keys, never a secret.
    let listed = admin.ok(&acme_key, Method::GET, "/keys", None).await?;
    let listed = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|k| k["tenant_id"] == json!(acme)));
    assert!(
        !Value::Array(listed.clone())
            .to_string()
            .contains(&spare_key)
    );
    // Another tenant's key looks like one that does not exist.
    let (status, body) = admin
        .call(
            &globex_key,
            Method::POST,
            &format!("/keys/{spare_id}/revoke"),
            None,
        )
        .await?;
    assert_eq!(status, 404, "{body}");

    // Revoked: refused at once; revoking again is a conflict.
    let revoked = admin
        .ok(
            &acme_key,
            Method::POST,
            &format!("/keys/{spare_id}/revoke"),
            None,
        )
        .await?;
    assert_eq!(revoked["active"], false, "{revoked}");
    assert_eq!(works(&spare_key).await?, 401);
    let (status, _) = admin
        .call(
            &acme_key,
            Method::POST,
            &format!("/keys/{spare_id}/revoke"),
            None,
        )
        .await?;
    assert_eq!(status, 409);

    // Rotation with a grace: both keys work until the grace ends, then only the new one.
    let acme_id = listed
        .iter()
        .find(|k| k["name"] == "tests")
        .and_then(|k| k["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (status, body) = admin
        .call(
            &acme_key,
            Method::POST,
            &format!("/keys/{acme_id}/rotate"),
            Some(json!({"grace_seconds": 604801})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "grace_seconds",
        "{body}"
    );
    let rotated = admin
        .ok(
            &acme_key,
            Method::POST,
            &format!("/keys/{acme_id}/rotate"),
            Some(json!({"grace_seconds": 2})),
        )
        .await?;
    let new_key = rotated["key"].as_str().unwrap_or_default().to_owned();
    assert_eq!(rotated["name"], "tests");
    assert_eq!(rotated["replaced"]["active"], true, "{rotated}");
    assert_eq!(works(&new_key).await?, 200);
    assert_eq!(
        works(&acme_key).await?,
        200,
        "the old key works in its grace"
    );
    // Rotated once: a second rotation (a retry whose answer was lost) makes no other key.
    let (status, again) = admin
        .call(
            &acme_key,
            Method::POST,
            &format!("/keys/{acme_id}/rotate"),
            Some(json!({"grace_seconds": 2})),
        )
        .await?;
    assert_eq!(status, 409, "{again}");
    assert!(again.to_string().contains("rotated already"), "{again}");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        works(&acme_key).await?,
        401,
        "the old key outlived its grace"
    );
    assert_eq!(works(&new_key).await?, 200);

    // The CLI: rotate at once prints only the new secret on stdout.
    let cli = |key: &str, args: &[&str]| {
        let mut all = vec!["--url", admin.url.as_str(), "--key", key];
        all.extend_from_slice(args);
        env.run_binary("herald", &all, &[])
    };
    let new_id = rotated["id"].as_str().unwrap_or_default().to_owned();
    let out = cli(&op, &["key", "rotate", &new_id])?;
    assert!(out.status.success(), "{out:?}");
    let newest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(newest.starts_with("hk_tn_"), "{newest}");
    assert_eq!(works(&new_key).await?, 401);
    assert_eq!(works(&newest).await?, 200);
    let out = cli(&newest, &["key", "list"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("revoked") && text.contains("active"),
        "{text}"
    );
    let out = cli(&newest, &["key", "revoke", &spare_id])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already revoked"),
        "{out:?}"
    );
    Ok(())
}

/// A `send` key (a tenant's service that sends transactional messages) reaches the messages
/// API and nothing else: not the tenant's campaigns, contacts or providers, not its keys (it
/// cannot rotate itself into a full key), and its rotation keeps it a `send` key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_key_reaches_only_the_messages_api() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let (acme, acme_key, provider) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    let (_, globex_key, _) = admin
        .tenant_with_provider("globex", &env.simulator_url)
        .await?;

    // A tenant's full key makes keys for its own tenant, and for no other.
    let made = admin
        .ok(
            &acme_key,
            Method::POST,
            &format!("/tenants/{acme}/keys"),
            Some(json!({"name": "checkout", "access": "send"})),
        )
        .await?;
    assert_eq!(made["access"], "send", "{made}");
    let send_key = made["key"].as_str().unwrap_or_default().to_owned();
    let send_id = made["id"].as_str().unwrap_or_default().to_owned();
    let (status, body) = admin
        .call(
            &globex_key,
            Method::POST,
            &format!("/tenants/{acme}/keys"),
            Some(json!({"name": "intruder"})),
        )
        .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin
        .call(
            &acme_key,
            Method::POST,
            &format!("/tenants/{acme}/keys"),
            Some(json!({"name": "x", "access": "admin"})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "access", "{body}");

    // The messages API: send, read, list, cancel (no scheduler runs: the message waits).
    let sent = admin
        .ok(
            &send_key,
            Method::POST,
            "/messages",
            Some(
                json!({"to": "+15551230001", "channel": "sms", "provider_id": provider,
                        "text": "Your code is 4821"}),
            ),
        )
        .await?;
    let message = sent["id"].as_str().unwrap_or_default().to_owned();
    admin
        .ok(
            &send_key,
            Method::GET,
            &format!("/messages/{message}"),
            None,
        )
        .await?;
    admin.ok(&send_key, Method::GET, "/messages", None).await?;
    admin
        .ok(&send_key, Method::GET, "/openapi.json", None)
        .await?;
    admin
        .ok(
            &send_key,
            Method::POST,
            &format!("/messages/{message}/cancel"),
            None,
        )
        .await?;

    // Nothing else, however it asks.
    for (method, path, body) in [
        (Method::GET, "/campaigns".to_owned(), None),
        (
            Method::POST,
            "/campaigns".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, "/contacts".to_owned(), None),
        (Method::GET, "/providers".to_owned(), None),
        (Method::GET, format!("/providers/{provider}"), None),
        (Method::GET, "/tenants".to_owned(), None),
        (Method::GET, "/keys".to_owned(), None),
        (Method::POST, format!("/keys/{send_id}/rotate"), None),
        (
            Method::POST,
            format!("/tenants/{acme}/keys"),
            Some(json!({"name": "escalated"})),
        ),
        (Method::GET, "/receipts/orphans".to_owned(), None),
    ] {
        let (status, answer) = admin.call(&send_key, method.clone(), &path, body).await?;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("send")),
            "{method} {path}: {answer}"
        );
    }

    // Listed with its access; rotated by a full key, it stays a send key.
    let listed = admin.ok(&acme_key, Method::GET, "/keys", None).await?;
    let listed = listed.as_array().cloned().unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|k| k["id"] == json!(send_id) && k["access"] == "send"),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|k| k["name"] == "tests" && k["access"] == "full"),
        "{listed:?}"
    );
    let rotated = admin
        .ok(
            &acme_key,
            Method::POST,
            &format!("/keys/{send_id}/rotate"),
            None,
        )
        .await?;
    let rotated_key = rotated["key"].as_str().unwrap_or_default().to_owned();
    let (status, _) = admin
        .call(&rotated_key, Method::GET, "/campaigns", None)
        .await?;
    assert_eq!(status, 403);
    admin
        .ok(&rotated_key, Method::GET, "/messages", None)
        .await?;

    // The CLI makes one; a send key's refusal is said, exit 1.
    let cli = |key: &str, args: &[&str]| {
        let mut all = vec!["--url", admin.url.as_str(), "--key", key];
        all.extend_from_slice(args);
        env.run_binary("herald", &all, &[])
    };
    let out = cli(
        &admin.operator_key,
        &["tenant", "key", &acme, "--name", "svc", "--access", "send"],
    )?;
    assert!(out.status.success(), "{out:?}");
    let cli_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = cli(&cli_key, &["campaign", "list"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("access is `send`"),
        "{out:?}"
    );
    let out = cli(&acme_key, &["key", "list"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ACCESS") && text.contains("send"), "{text}");
    // An operator key is never limited.
    let out = env.run_binary(
        "herald-admin",
        &[
            "keys",
            "create",
            "--operator",
            "--name",
            "o",
            "--access",
            "send",
        ],
        &[("HERALD_DATABASE_URL", env.database_url.as_str())],
    )?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--access send"),
        "{out:?}"
    );
    Ok(())
}
