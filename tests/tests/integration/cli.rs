//! The `herald` CLI against a real admin server: scripts can drive a campaign from creation to
//! progress, and failures exit non-zero with the API's explanation.

use herald_tests::{Result, TestEnv};
use serde_json::Value;
use std::process::Output;

struct Cli<'a> {
    env: &'a TestEnv,
    url: String,
}

impl<'a> Cli<'a> {
    fn new(env: &'a TestEnv, admin: &herald_tests::Admin) -> Self {
        Self {
            env,
            url: admin.url.clone(),
        }
    }

    fn run(&self, key: &str, args: &[&str]) -> Result<Output> {
        let mut all = vec!["--url", self.url.as_str(), "--key", key];
        all.extend_from_slice(args);
        self.env.run_binary("herald", &all, &[])
    }

    /// Runs with `--json`, expects success, returns the JSON.
    fn json(&self, key: &str, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(key, &all)?;
        anyhow::ensure!(
            output.status.success(),
            "herald {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_drives_a_campaign_and_failures_exit_non_zero() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let admin = env.admin().await?;
    let cli = Cli::new(&env, &admin);
    let op = admin.operator_key.as_str();

    let tenant = cli.json(
        op,
        &["tenant", "create", "acme", "--time-zone", "Europe/Paris"],
    )?;
    let tenant_id = id(&tenant);
    let changed = cli.json(
        op,
        &[
            "tenant",
            "update",
            &tenant_id,
            "--weight",
            "3",
            "--max-messages-per-day",
            "none",
        ],
    )?;
    assert_eq!(
        (&changed["weight"], &changed["time_zone"]),
        (&serde_json::json!(3), &serde_json::json!("Europe/Paris")),
        "{changed}"
    );
    let key_out = cli.run(op, &["tenant", "key", &tenant_id, "--name", "ci"])?;
    assert!(key_out.status.success());
    let key = String::from_utf8(key_out.stdout)?.trim().to_owned();
    assert!(key.starts_with("hk_tn_"), "the key alone on stdout: {key}");

    let endpoint = format!("{}/v1/messages", env.simulator_url);
    let provider = cli.json(
        &key,
        &[
            "provider",
            "create",
            "sim",
            "--endpoint",
            &endpoint,
            "--rate-limit",
            "1000",
        ],
    )?;
    assert_eq!(
        (
            provider["rate_limit"].as_i64(),
            provider["rate_window_ms"].as_i64()
        ),
        (Some(1000), Some(1000))
    );
    let create = [
        "campaign",
        "create",
        "spring",
        "--provider",
        &id(&provider),
        "--channel",
        "sms",
        "--template",
        "Hi {{first_name}}",
        "--quiet-hours",
        "21:00-07:00",
        "--idempotency-key",
        "spring-1",
    ];
    let campaign = cli.json(&key, &create)?;
    let campaign_id = id(&campaign);
    assert_eq!(campaign["quiet_hours"]["time_zone"], "Europe/Paris");
    // Created again under its key (after a lost answer, say): the same draft, no other.
    assert_eq!(id(&cli.json(&key, &create)?), campaign_id);

    let dir = std::env::temp_dir().join(format!("herald-cli-{}", env.name));
    std::fs::create_dir_all(&dir)?;
    let good = dir.join("audience.csv");
    let mut csv = String::from("address,first_name\n");
    for i in 0..300 {
        csv.push_str(&format!("+1555{i:07},R{i}\n"));
    }
    std::fs::write(&good, csv)?;
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "address,first_name\n+15550000001,Ann\nnot-a-number,Bob\n",
    )?;

    // A rejected upload: exit 1, the row named on stderr, nothing imported.
    let refused = cli.run(
        &key,
        &[
            "campaign",
            "upload",
            &campaign_id,
            bad.to_str().unwrap_or(""),
        ],
    )?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not-a-number") && stderr.contains('2'),
        "{stderr}"
    );

    let uploaded = cli.json(
        &key,
        &[
            "campaign",
            "upload",
            &campaign_id,
            good.to_str().unwrap_or(""),
        ],
    )?;
    assert_eq!(uploaded["inserted"], 300);

    // Quiet hours were set for the evening; drop them so this test can send now.
    sqlx::query("UPDATE campaigns SET quiet_start = NULL, quiet_end = NULL WHERE id = $1::uuid")
        .bind(&campaign_id)
        .execute(&env.pool)
        .await?;
    // Watching a draft (a script whose `start` failed) ends at once, saying why: it waited
    // for ever.
    let draft = cli.run(&key, &["campaign", "progress", &campaign_id, "--watch"])?;
    assert_eq!(draft.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&draft.stderr);
    assert!(stderr.contains("is a draft"), "{stderr}");

    let started = cli.json(&key, &["campaign", "start", &campaign_id])?;
    assert_eq!(started["status"], "scheduled", "{started}");
    // No scheduler yet: it does not move, and --timeout ends the watch (exit 4), saying so
    // and printing the progress seen.
    let waited = cli.run(
        &key,
        &[
            "--json",
            "campaign",
            "progress",
            &campaign_id,
            "--watch",
            "--timeout",
            "2",
        ],
    )?;
    assert_eq!(waited.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(stderr.contains("still scheduled after 2s"), "{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&waited.stdout)?;
    assert_eq!(seen["status"], "scheduled", "{seen}");

    let _scheduler = env.scheduler(500, &[])?;
    let _worker = env.worker(&[])?;
    // --watch returns once the campaign is completed; with --exit-status, 0 as every
    // recipient was sent.
    let watched = cli.run(
        &key,
        &[
            "--json",
            "campaign",
            "progress",
            &campaign_id,
            "--watch",
            "--exit-status",
        ],
    )?;
    assert_eq!(watched.status.code(), Some(0), "{watched:?}");
    let watched: serde_json::Value = serde_json::from_slice(&watched.stdout)?;
    assert_eq!(watched["status"], "completed", "{watched}");
    assert_eq!(watched["sent"], 300);

    // A transactional message through the same provider: once per idempotency key.
    let send = [
        "message",
        "send",
        "--to",
        "+1 555 999 0001",
        "--channel",
        "sms",
        "--provider",
        &id(&provider),
        "--template",
        "Code {{code}}",
        "--var",
        "code=4821",
        "--idempotency-key",
        "otp-1",
    ];
    let message = cli.json(&key, &send)?;
    assert_eq!(
        (message["to"].as_str(), message["text"].as_str()),
        (Some("+15559990001"), Some("Code 4821"))
    );
    assert_eq!(
        id(&cli.json(&key, &send)?),
        id(&message),
        "the same key, the same message"
    );
    let shown = herald_tests::wait_until(std::time::Duration::from_secs(20), || async {
        cli.run(&key, &["message", "show", &id(&message)])
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .is_some_and(|text| {
                text.lines()
                    .any(|l| l.starts_with("state") && l.ends_with("sent"))
            })
    })
    .await;
    assert!(shown.is_ok(), "herald message show reports it sent");
    // Sent: past cancelling, which says so and exits 1.
    let too_late = cli.run(&key, &["message", "cancel", &id(&message)])?;
    assert_eq!(too_late.status.code(), Some(1));
    let said = String::from_utf8(too_late.stderr)?;
    assert!(said.contains("`sent`"), "{said}");
    let listed = cli.json(&key, &["message", "list", "--state", "sent"])?;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let no_text = cli.run(
        &key,
        &[
            "message",
            "send",
            "--to",
            "+15559990001",
            "--channel",
            "sms",
            "--provider",
            &id(&provider),
        ],
    )?;
    assert_eq!(
        no_text.status.code(),
        Some(2),
        "--text or --template is required"
    );

    // Lists page: a page and the way to the next on stderr, or every page with --all.
    let first = cli.run(
        &key,
        &["campaign", "recipients", &campaign_id, "--limit", "120"],
    )?;
    assert!(first.status.success());
    let table = String::from_utf8(first.stdout)?;
    assert_eq!(table.lines().count(), 121, "a header and 120 rows: {table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("+15550000000"))
    );
    let stderr = String::from_utf8(first.stderr)?;
    let cursor = stderr
        .trim()
        .strip_prefix("more: --cursor ")
        .unwrap_or_else(|| panic!("no next page on stderr: {stderr:?}"));
    let recipients = |more: &[&str]| {
        let mut args = vec!["campaign", "recipients", &campaign_id, "--limit", "120"];
        args.extend_from_slice(more);
        cli.json(&key, &args)
    };
    let second = recipients(&["--cursor", cursor])?;
    assert_eq!(second["items"][0]["address"], "+15550000120");
    let all = recipients(&["--all", "--state", "sent"])?;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(300));
    assert_eq!(all["next_cursor"], Value::Null);
    let found = recipients(&["--address", "+15550000299"])?;
    assert_eq!(found["items"][0]["state"], "sent");
    let listed = cli.run(
        op,
        &["campaign", "list", "--name", "SPR", "--tenant", &tenant_id],
    )?;
    let listed = String::from_utf8(listed.stdout)?;
    assert!(
        listed.contains("spring") && listed.contains("acme"),
        "the campaign, with its tenant's name: {listed}"
    );
    let bad_limit = cli.run(&key, &["campaign", "list", "--limit", "0"])?;
    assert_eq!(bad_limit.status.code(), Some(2));

    // An operator's contact list names each contact's tenant.
    let contacts = dir.join("contacts.csv");
    std::fs::write(&contacts, "address,plan\n+33600000042,gold\n")?;
    let uploaded = cli.run(
        &key,
        &["contact", "upload", contacts.to_str().unwrap_or("")],
    )?;
    assert!(uploaded.status.success(), "{uploaded:?}");
    let listed = cli.run(op, &["contact", "list", "--tenant", &tenant_id])?;
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8(listed.stdout)?;
    assert!(
        listed.lines().next().is_some_and(|h| h.contains("TENANT"))
            && listed
                .lines()
                .any(|l| l.contains("+33600000042") && l.contains("acme")),
        "the contact, with its tenant's name: {listed}"
    );
    // Deleted by id, once; a second delete finds none (exit 1).
    let found = cli.json(&key, &["contact", "list", "--address", "+33600000042"])?;
    let contact = found["items"][0]["id"]
        .as_i64()
        .unwrap_or_default()
        .to_string();
    let deleted = cli.run(&key, &["contact", "delete", &contact])?;
    assert!(deleted.status.success(), "{deleted:?}");
    let again = cli.run(&key, &["contact", "delete", &contact])?;
    assert_eq!(again.status.code(), Some(1), "{again:?}");

    // A state that does not allow the action: exit 1 with the API's reason.
    let conflict = cli.run(&key, &["campaign", "pause", &campaign_id])?;
    assert_eq!(conflict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("completed"));
    // Another tenant's view of it, and no server at all.
    let other = cli.json(op, &["tenant", "create", "globex"])?;
    let other_key = String::from_utf8(
        cli.run(op, &["tenant", "key", &id(&other), "--name", "x"])?
            .stdout,
    )?;
    let hidden = cli.run(other_key.trim(), &["campaign", "show", &campaign_id])?;
    assert_eq!(hidden.status.code(), Some(1));
    let nowhere = Cli {
        env: &env,
        url: "http://127.0.0.1:9".to_owned(),
    };
    assert_eq!(
        nowhere.run(&key, &["campaign", "list"])?.status.code(),
        Some(3)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_of_each_kind_and_an_overflow_campaign() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let admin = env.admin().await?;
    let cli = Cli::new(&env, &admin);
    let (_, key, primary) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;

    let twilio = cli.json(
        &key,
        &[
            "provider",
            "create",
            "twilio-eu",
            "--kind",
            "twilio-sms",
            "--endpoint",
            &env.simulator_url,
            "--setting",
            "from=+15005550006",
            "--credentials",
            r#"{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "s3cr3t"}"#,
            "--cost-per-message",
            "0.0079",
        ],
    )?;
    assert_eq!(twilio["kind"], "twilio_sms", "{twilio}");
    assert_eq!(twilio["settings"]["from"], "+15005550006", "{twilio}");
    assert_eq!(twilio["has_credentials"], true, "{twilio}");
    assert_eq!(twilio["cost_per_message"], 0.0079, "{twilio}");
    assert!(!twilio.to_string().contains("s3cr3t"), "{twilio}");
    // Its token rotated: receipts signed with the old one still pass for a day by default,
    // not at all with --grace 0 (a leaked token).
    let rotate = |token: &str, grace: &str| {
        let credentials = format!(
            r#"{{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "{token}"}}"#
        );
        cli.json(
            &key,
            &[
                "provider",
                "rotate-credentials",
                &id(&twilio),
                "--credentials",
                &credentials,
                "--grace",
                grace,
            ],
        )
    };
    let rotated = rotate("n3w", "86400")?;
    assert!(
        rotated["previous_credentials_until"].is_string(),
        "{rotated}"
    );
    let rotated = rotate("n3w3r", "0")?;
    assert_eq!(
        rotated["previous_credentials_until"],
        Value::Null,
        "{rotated}"
    );
    // A segment made, then deleted; a second delete finds none (exit 1).
    let segment = cli.json(
        &key,
        &["segment", "create", "gold", "--filter", "plan = 'gold'"],
    )?;
    let deleted = cli.run(&key, &["segment", "delete", &id(&segment)])?;
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(
        String::from_utf8_lossy(&deleted.stdout).contains("deleted"),
        "{deleted:?}"
    );
    let again = cli.run(&key, &["segment", "delete", &id(&segment)])?;
    assert_eq!(again.status.code(), Some(1), "{again:?}");

    // Opt-outs added (numbers as people write them), listed as a table, taken off; a bad
    // number exits 1 naming it.
    let added = cli.json(
        &key,
        &[
            "suppression",
            "add",
            "--channel",
            "sms",
            "--reason",
            "by email",
            "+1 555 000 0009",
        ],
    )?;
    assert_eq!(added["added"], 1, "{added}");
    let refused = cli.run(&key, &["suppression", "add", "--channel", "sms", "12"])?;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("addresses[0]"),
        "{refused:?}"
    );
    let table = cli.run(&key, &["suppression", "list", "--channel", "sms"])?;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("+15550000009") && table.contains("by email") && table.contains("tenant"),
        "{table}"
    );
    let listed = cli.json(&key, &["suppression", "list", "--address", "+15550000009"])?;
    let entry = listed["items"][0]["id"]
        .as_i64()
        .unwrap_or_default()
        .to_string();
    let removed = cli.run(&key, &["suppression", "remove", &entry])?;
    assert!(removed.status.success(), "{removed:?}");
    let again = cli.run(&key, &["suppression", "remove", &entry])?;
    assert_eq!(again.status.code(), Some(1), "{again:?}");

    // A WhatsApp provider without its phone number id: exit 1, the field named.
    let refused = cli.run(
        &key,
        &[
            "provider",
            "create",
            "wa",
            "--kind",
            "whatsapp",
            "--credentials",
            r#"{"access_token": "t"}"#,
        ],
    )?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("settings.phone_number_id"), "{stderr}");
    let whatsapp = cli.json(
        &key,
        &[
            "provider",
            "create",
            "wa",
            "--kind",
            "whatsapp",
            "--setting",
            "phone_number_id=106540352242922",
            "--setting",
            "preview_url=true",
            "--credentials",
            r#"{"access_token": "t"}"#,
        ],
    )?;
    assert_eq!(whatsapp["settings"]["phone_number_id"], "106540352242922");
    assert_eq!(whatsapp["settings"]["preview_url"], true);

    let campaign = cli.json(
        &key,
        &[
            "campaign",
            "create",
            "black-friday",
            "--provider",
            &primary,
            "--overflow-provider",
            &id(&twilio),
            "--channel",
            "sms",
            "--template",
            "Doors open at 8",
        ],
    )?;
    assert_eq!(campaign["overflow_provider_id"], twilio["id"], "{campaign}");
    let shown = cli.run(&key, &["campaign", "show", &id(&campaign)])?;
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("overflow provider"))
        .unwrap_or_default();
    assert!(line.ends_with(&id(&twilio)), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sent via")), "{text}");

    // A committed volume on the tenant's own provider, shown by `provider show`.
    let committed = cli.json(
        &key,
        &[
            "provider",
            "commitment",
            &id(&twilio),
            "--per-month",
            "500000",
        ],
    )?;
    assert_eq!(committed["monthly_commitment"], 500000, "{committed}");
    let shown = cli.run(&key, &["provider", "show", &id(&twilio)])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("commitment") && l.contains("500000 a month: 0 sent")),
        "{text}"
    );
    let removed = cli.json(&key, &["provider", "commitment", &id(&twilio), "--none"])?;
    assert_eq!(removed["monthly_commitment"], Value::Null, "{removed}");

    // The tenant's default for sms, then a message that names no provider.
    let tenant = campaign["tenant_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let defaults = cli.json(
        &key,
        &[
            "tenant",
            "default-provider",
            &tenant,
            "--channel",
            "sms",
            "--provider",
            &primary,
            "--overflow-provider",
            &id(&twilio),
        ],
    )?;
    assert_eq!(defaults[0]["provider_id"], primary.as_str(), "{defaults}");
    let message = cli.json(
        &key,
        &[
            "message",
            "send",
            "--to",
            "+15551230009",
            "--channel",
            "sms",
            "--text",
            "hi",
            "--quiet-hours",
            "21:00-07:00",
        ],
    )?;
    assert_eq!(message["provider_id"], primary.as_str(), "{message}");
    assert_eq!(message["overflow_provider_id"], twilio["id"], "{message}");
    assert_eq!(message["quiet_hours"]["start"], "21:00", "{message}");
    let cleared = cli.json(
        &key,
        &[
            "tenant",
            "default-provider",
            &tenant,
            "--channel",
            "sms",
            "--remove",
        ],
    )?;
    assert_eq!(cleared, serde_json::json!([]));
    let refused = cli.run(
        &key,
        &[
            "message",
            "send",
            "--to",
            "+15551230009",
            "--channel",
            "sms",
            "--text",
            "hi",
        ],
    )?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("provider_id"), "{stderr}");
    Ok(())
}
