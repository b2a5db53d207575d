//! The admin API against a real server and PostgreSQL: every endpoint, tenant isolation and
//! bad input. (The pipeline is not started here; see `admin_control` for that.)

use herald_tests::{Admin, Result, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;

struct World {
    env: TestEnv,
    admin: Admin,
    tenant_a: String,
    key_a: String,
    tenant_b: String,
    key_b: String,
    provider_a: String,
}

/// Two tenants with a key each, and a provider for tenant A.
async fn world() -> Result<World> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let mut ids = Vec::new();
    for name in ["tenant-a", "tenant-b"] {
        let tenant = admin
            .ok(
                &op,
                POST,
                "/tenants",
                Some(json!({"name": name, "time_zone": "Europe/Paris"})),
            )
            .await?;
        let id = tenant["id"].as_str().unwrap_or_default().to_owned();
        let key = admin
            .ok(
                &op,
                POST,
                &format!("/tenants/{id}/keys"),
                Some(json!({"name": "k"})),
            )
            .await?;
        ids.push((id, key["key"].as_str().unwrap_or_default().to_owned()));
    }
    let (b, a) = (ids.pop().unwrap_or_default(), ids.pop().unwrap_or_default());
    let provider = admin
        .ok(
            &a.1,
            POST,
            "/providers",
            Some(
                json!({"name": "sim", "endpoint": format!("{}/v1/messages", env.simulator_url),
                        "credentials": {"token": "sup3r-s3cret"}}),
            ),
        )
        .await?;
    Ok(World {
        provider_a: provider["id"].as_str().unwrap_or_default().to_owned(),
        env,
        admin,
        tenant_a: a.0,
        key_a: a.1,
        tenant_b: b.0,
        key_b: b.1,
    })
}

async fn draft(w: &World, template: &str) -> Result<String> {
    let campaign = w
        .admin
        .ok(
            &w.key_a,
            POST,
            "/campaigns",
            Some(json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": template})),
        )
        .await?;
    Ok(campaign["id"].as_str().unwrap_or_default().to_owned())
}

fn field_errors(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scope_every_resource_to_its_tenant() -> Result<()> {
    let w = world().await?;
    let (admin, op) = (&w.admin, w.admin.operator_key.as_str());
    let campaign = draft(&w, "Hi {{first_name}}").await?;

    // No key, a wrong key, a tenant key on an operator action.
    let (status, body) = admin.call("", GET, "/campaigns", None).await?;
    assert_eq!(status, 401, "{body}");
    let (status, _) = admin.call("hk_op_0000", GET, "/campaigns", None).await?;
    assert_eq!(status, 401);
    let (status, body) = admin
        .call(&w.key_a, POST, "/tenants", Some(json!({"name": "x"})))
        .await?;
    assert_eq!(status, 403, "{body}");

    // Tenant B cannot read, change or even detect tenant A's objects: 404 like a random id.
    let random = uuid::Uuid::new_v4();
    for path in [
        format!("/campaigns/{campaign}"),
        format!("/campaigns/{random}"),
        format!("/campaigns/{campaign}/progress"),
        format!("/campaigns/{campaign}/errors"),
        format!("/campaigns/{campaign}/recipients"),
        format!("/providers/{}", w.provider_a),
        format!("/tenants/{}", w.tenant_a),
    ] {
        let (status, body) = admin.call(&w.key_b, GET, &path, None).await?;
        assert_eq!(status, 404, "GET {path} as tenant B: {body}");
    }
    for action in ["start", "pause", "resume", "cancel"] {
        let (status, _) = admin
            .call(
                &w.key_b,
                POST,
                &format!("/campaigns/{campaign}/{action}"),
                None,
            )
            .await?;
        assert_eq!(status, 404, "{action} as tenant B");
    }
    let (status, _) = admin
        .upload(
            &w.key_b,
            &format!("/campaigns/{campaign}/recipients"),
            "text/csv",
            "address,first_name\n+33611111111,X\n",
        )
        .await?;
    assert_eq!(status, 404);
    // B cannot use A's provider either (it is not even visible).
    let (status, body) = admin
        .call(
            &w.key_b,
            POST,
            "/campaigns",
            Some(json!({"name": "b", "provider_id": w.provider_a, "channel": "sms", "template": "x"})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(field_errors(&body), vec!["provider_id"]);
    // A tenant key's tenant_id in a body is ignored: it cannot create objects for others.
    let created = admin
        .ok(
            &w.key_b,
            POST,
            "/segments",
            Some(json!({"tenant_id": w.tenant_a, "name": "mine", "filter": "x = 1"})),
        )
        .await?;
    assert_eq!(created["tenant_id"], w.tenant_b.as_str());

    // Listings: each tenant sees its own; the operator sees all.
    let listed = admin.ok(&w.key_b, GET, "/campaigns", None).await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
    let listed = admin.ok(&w.key_a, GET, "/campaigns", None).await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    let tenants = admin.ok(&w.key_b, GET, "/tenants", None).await?;
    assert_eq!(tenants.as_array().map(Vec::len), Some(1));
    let tenants = admin.ok(op, GET, "/tenants", None).await?;
    assert_eq!(tenants.as_array().map(Vec::len), Some(2));

    // Credentials are write-only: never in any response.
    for (key, path) in [
        (op, "/providers".to_owned()),
        (&w.key_a, format!("/providers/{}", w.provider_a)),
    ] {
        let text = admin.ok(key, GET, &path, None).await?.to_string();
        assert!(
            !text.contains("sup3r-s3cret") && !text.contains("\"credentials\""),
            "{text}"
        );
        assert!(text.contains("\"has_credentials\":true"), "{text}");
    }
    // ...nor in the server's log.
    assert!(!admin.log_text().contains("sup3r-s3cret"));
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE key_hash IS NOT NULL")
        .fetch_one(&w.env.pool)
        .await?;
    assert_eq!(keys, 3, "operator + two tenant keys, stored hashed");
    let stored: Vec<String> = sqlx::query_scalar("SELECT encode(key_hash, 'escape') FROM api_keys")
        .fetch_all(&w.env.pool)
        .await?;
    assert!(
        stored.iter().all(|h| !h.contains(&w.key_a)),
        "keys are stored hashed"
    );

    // axum's own rejections come in the same JSON shape.
    let (status, body) = admin.call(op, GET, "/campaigns/not-a-uuid", None).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let (status, body) = admin.call(op, GET, "/no-such-thing", None).await?;
    assert_eq!((status, body["error"]["status"].as_u64()), (404, Some(404)));

    // The OpenAPI document lists the resources.
    let doc: Value = admin
        .http
        .get(format!("{}/api/v1/openapi.json", admin.url))
        .send()
        .await?
        .json()
        .await?;
    for path in [
        "/campaigns",
        "/campaigns/{id}/recipients",
        "/segments",
        "/contacts",
        "/tenants",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // Each list's filters and page parameters are in its query, as the server reads them.
    for (path, method) in [
        ("/campaigns", "get"),
        ("/campaigns/{id}/recipients", "get"),
        ("/contacts", "get"),
        ("/contacts", "post"),
        ("/messages", "get"),
        ("/receipts/orphans", "get"),
    ] {
        let parameters = doc["paths"][path][method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let misplaced: Vec<&Value> = parameters
            .iter()
            .filter(|p| p["in"] != "query" && !(p["in"] == "path" && p["name"] == "id"))
            .collect();
        assert!(
            !parameters.is_empty() && misplaced.is_empty(),
            "{method} {path}: {parameters:?}"
        );
    }
    Ok(())
}

/// An operator changes a tenant's settings (only those given; `null` removes one it may be
/// without), checked as at its creation; a tenant's key cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_changed_by_an_operator_and_checked_as_at_creation() -> Result<()> {
    let w = world().await?;
    let (admin, op) = (&w.admin, &w.admin.operator_key);
    let path = format!("/tenants/{}", w.tenant_a);
    let patch = |key: &str, body: Value| {
        let (key, path) = (key.to_owned(), path.clone());
        async move { admin.call(&key, Method::PATCH, &path, Some(body)).await }
    };
    assert_eq!(patch(&w.key_a, json!({"weight": 2})).await?.0, 403);
    let unknown = format!("/tenants/{}", uuid::Uuid::new_v4());
    assert_eq!(
        admin
            .call(op, Method::PATCH, &unknown, Some(json!({"weight": 2})))
            .await?
            .0,
        404
    );
    let (status, body) = patch(
        op,
        json!({"weight": 0, "max_live_calls": 0, "default_region": "XX",
               "time_zone": "Mars/Olympus"}),
    )
    .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (
            422,
            vec![
                "weight".to_owned(),
                "max_live_calls".to_owned(),
                "default_region".to_owned(),
                "time_zone".to_owned()
            ]
        ),
        "{body}"
    );
    for refused in [
        json!({"name": null}),
        json!({"weight": null}),
        json!({"nope": 1}),
    ] {
        assert_eq!(patch(op, refused.clone()).await?.0, 422, "{refused}");
    }
    assert_eq!(
        patch(op, json!({"name": "tenant-b"})).await?.0,
        409,
        "another tenant's name"
    );
    let (status, changed) = patch(op, json!({"weight": 7, "default_region": "FR"})).await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            &changed["weight"],
            &changed["default_region"],
            &changed["name"]
        ),
        (&json!(7), &json!("FR"), &json!("tenant-a")),
        "{changed}"
    );
    let (status, changed) = patch(op, json!({"default_region": null})).await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["default_region"], Value::Null, "{changed}");
    let stored: (i32, Option<String>) =
        sqlx::query_as("SELECT weight, default_region FROM tenants WHERE id = $1::uuid")
            .bind(&w.tenant_a)
            .fetch_one(&w.env.pool)
            .await?;
    assert_eq!(stored, (7, None));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field_and_write_nothing() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let bad = [
        (
            json!({"name": "", "provider_id": w.provider_a, "channel": "sms", "template": "x"}),
            "name",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "fax", "template": "x"}),
            "channel",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "Hi {{name"}),
            "template",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x", "batch_size": 0}),
            "batch_size",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x",
                "quiet_hours": {"start": "25:00", "end": "07:00"}}),
            "quiet_hours.start",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x",
                "quiet_hours": {"start": "21:00", "end": "07:00", "time_zone": "Mars/Olympus"}}),
            "quiet_hours.time_zone",
        ),
        (
            // Misspelt, it would leave the window in the tenant's zone.
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x",
                "quiet_hours": {"start": "21:00", "end": "07:00", "timezone": "America/New_York"}}),
            "quiet_hours.timezone",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x",
                "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x", "batch_size": "many"}),
            "batch_size",
        ),
        (
            // A missing field is named itself.
            json!({"name": "c", "provider_id": w.provider_a, "channel": "sms"}),
            "template",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) = admin
            .call(&w.key_a, POST, "/campaigns", Some(body.clone()))
            .await?;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(
            field_errors(&answer).iter().any(|f| f == field),
            "{body} should name `{field}`: {answer}"
        );
    }
    // A huge bad value is named, not echoed whole.
    let long = "x".repeat(200_000);
    for body in [
        json!({"name": "c", "provider_id": w.provider_a, "channel": long, "template": "x"}),
        json!({"name": "c", "provider_id": w.provider_a, "channel": "sms", "template": "x",
               "quiet_hours": {"start": "21:00", "end": "07:00", "time_zone": long}}),
    ] {
        let (status, answer) = admin.call(&w.key_a, POST, "/campaigns", Some(body)).await?;
        assert_eq!(status, 422);
        assert!(
            answer.to_string().len() < 2_000,
            "{} bytes",
            answer.to_string().len()
        );
    }
    // Names with SQL in them are just names.
    let evil = "x'); DROP TABLE campaigns; --";
    let created = admin
        .ok(
            &w.key_a,
            POST,
            "/campaigns",
            Some(json!({"name": evil, "provider_id": w.provider_a, "channel": "sms", "template": "x"})),
        )
        .await?;
    assert_eq!(created["name"], evil);
    let (status, _) = admin
        .call(
            &w.key_a,
            POST,
            "/providers",
            Some(json!({"name": "p", "endpoint": "ftp://x", "timeout_ms": 1})),
        )
        .await?;
    assert_eq!(status, 422);
    // A Twilio sender written otherwise than Twilio writes it back: a lost answer's lookup,
    // which lists by `From` exactly, would find nothing and send it again.
    let (status, body) = admin
        .call(
            &w.key_a,
            POST,
            "/providers",
            Some(json!({"name": "t", "kind": "twilio_sms",
                        "settings": {"from": "+1 500 555 0006"},
                        "credentials": {"account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t"}})),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["settings.from".to_owned()]),
        "{body}"
    );
    let (status, body) = admin
        .call(
            &w.admin.operator_key,
            POST,
            "/tenants",
            Some(json!({"name": "t", "weight": 0})),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["weight".to_owned()])
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM campaigns")
        .fetch_one(&w.env.pool)
        .await?;
    assert_eq!(count, 1, "only the valid campaign exists");

    // Uploads: malformed CSV, invalid numbers and a missing template variable are reported
    // per row, and nothing is imported.
    let campaign = draft(&w, "Hi {{first_name}}").await?;
    let path = format!("/campaigns/{campaign}/recipients");
    let (status, body) = admin
        .upload(
            &w.key_a,
            &path,
            "text/csv",
            "address,first_name\n+33612345678,Ada\n0612345678,Bob\n+33612345679\n+33612345670,\n+33612345671,Eve\n",
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let rows = body["error"]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reported: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap_or(0),
                r["field"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            (2, "address".into()),
            (3, "-".into()),
            (4, "first_name".into())
        ],
        "{body}"
    );
    assert_eq!(body["error"]["error_rows"], 3);
    let (status, body) = admin
        .upload(&w.key_a, &path, "text/csv", "name,first_name\nx,y\n")
        .await?;
    assert_eq!(status, 422, "{body}");
    let (status, _) = admin
        .upload(
            &w.key_a,
            &path,
            "application/json",
            "[{\"address\": \"+336\"",
        )
        .await?;
    assert_eq!(status, 422);
    let (status, _) = admin
        .upload(&w.key_a, &path, "text/plain", "whatever")
        .await?;
    assert_eq!(status, 415);
    let (status, body) = admin
        .upload(&w.key_a, &path, "text/csv", "address,first_name\n")
        .await?;
    assert_eq!(status, 422, "{body}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients")
        .fetch_one(&w.env.pool)
        .await?;
    assert_eq!(stored, 0, "failed uploads leave nothing behind");

    // The three formats, with duplicates removed within the upload and across uploads.
    let csv = admin
        .upload(
            &w.key_a,
            &path,
            "text/csv",
            "address,first_name\n+33612345678,Ada\n+33612345678,Ada2\n+33612345679,Bob\n",
        )
        .await?;
    assert_eq!(
        csv,
        (200, json!({"received": 3, "inserted": 2, "duplicates": 1}))
    );
    let ndjson = admin
        .upload(
            &w.key_a,
            &path,
            "application/x-ndjson",
            "{\"address\":\"+33612345679\",\"variables\":{\"first_name\":\"Bob\"}}\n{\"address\":\"+33612345680\",\"variables\":{\"first_name\":\"Cy\"}}\n",
        )
        .await?;
    assert_eq!(
        ndjson,
        (200, json!({"received": 2, "inserted": 1, "duplicates": 1}))
    );
    let array = admin
        .upload(
            &w.key_a,
            &path,
            "application/json",
            "[{\"address\":\"+33612345681\",\"variables\":{\"first_name\":\"Di\"}}]",
        )
        .await?;
    assert_eq!(array.0, 200);
    let listed = admin
        .ok(&w.key_a, GET, &format!("{path}?limit=2"), None)
        .await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["items"][0]["variables"]["first_name"], "Ada");

    // Actions that the status does not allow are 409; start on an empty campaign is 422.
    let (status, _) = admin
        .call(
            &w.key_a,
            POST,
            &format!("/campaigns/{campaign}/resume"),
            None,
        )
        .await?;
    assert_eq!(status, 409);
    let empty = draft(&w, "x").await?;
    let (status, body) = admin
        .call(&w.key_a, POST, &format!("/campaigns/{empty}/start"), None)
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["recipients".to_owned()])
    );
    let started = admin
        .ok(
            &w.key_a,
            POST,
            &format!("/campaigns/{campaign}/start"),
            None,
        )
        .await?;
    assert_eq!(started["status"], "scheduled");
    assert_eq!(started["progress"]["total"], 4);
    assert_eq!(started["progress"]["pending"], 4);
    let (status, _) = admin
        .call(
            &w.key_a,
            POST,
            &format!("/campaigns/{campaign}/start"),
            None,
        )
        .await?;
    assert_eq!(status, 409);
    let cancelled = admin
        .ok(
            &w.key_a,
            POST,
            &format!("/campaigns/{campaign}/cancel"),
            None,
        )
        .await?;
    assert_eq!(cancelled["status"], "cancelled");
    // The same action again (a retry whose answer was lost) is no error; another that the
    // status does not allow still is.
    for (action, expected) in [("cancel", 200), ("pause", 409), ("resume", 409)] {
        let (status, body) = admin
            .call(
                &w.key_a,
                POST,
                &format!("/campaigns/{campaign}/{action}"),
                None,
            )
            .await?;
        assert_eq!(status, expected, "{action}: {body}");
        if status == 200 {
            assert_eq!(body["status"], "cancelled", "{body}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_filter_contacts_safely_and_become_the_audience() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let contacts = "address,first_name,lifetime_value,last_purchase\n\
                    +33600000001,Ann,20000,2020-01-05\n\
                    +33600000002,Ben,5000,2020-01-05\n\
                    +33600000003,Cat,15000,2026-11-01\n\
                    +33600000004,Dan,n/a,2019-03-03\n\
                    +33600000005,Eve,12000,2018-07-07\n";
    let uploaded = admin
        .upload(&w.key_a, "/contacts", "text/csv", contacts)
        .await?;
    assert_eq!(
        uploaded,
        (200, json!({"received": 5, "inserted": 5, "updated": 0}))
    );
    // Tenant B's contacts never leak into A's segments.
    admin
        .upload(
            &w.key_b,
            "/contacts",
            "text/csv",
            "address,first_name,lifetime_value,last_purchase\n+33600000009,Zed,99999,2001-01-01\n",
        )
        .await?;

    for (filter, problem) in [
        ("lifetime_value > ", "expected a value"),
        ("lifetime_value >> 3", ""),
        ("(a = 1", ""),
        ("a = 'unterminated", "unterminated"),
        ("x\" = 1; DROP TABLE contacts; --", ""),
    ] {
        let (status, body) = admin
            .call(
                &w.key_a,
                POST,
                "/segments",
                Some(json!({"name": "bad", "filter": filter})),
            )
            .await?;
        assert_eq!(status, 422, "{filter}: {body}");
        assert_eq!(field_errors(&body), vec!["filter"], "{filter}");
        assert!(body.to_string().contains(problem), "{filter}: {body}");
    }
    // Injection attempts inside values are just values.
    let sneaky = admin
        .ok(
            &w.key_a,
            POST,
            "/segments",
            Some(json!({"name": "sneaky", "filter": "first_name = 'x'' OR 1=1; DROP TABLE contacts; --'"})),
        )
        .await?;
    let count = admin
        .ok(
            &w.key_a,
            GET,
            &format!("/segments/{}/count", sneaky["id"].as_str().unwrap_or("")),
            None,
        )
        .await?;
    assert_eq!(count["contacts"], 0);

    let lapsed = admin
        .ok(
            &w.key_a,
            POST,
            "/segments",
            Some(json!({"name": "lapsed big spenders",
                        "filter": "lifetime_value > 10000 and last_purchase < 365 days ago"})),
        )
        .await?;
    let segment = lapsed["id"].as_str().unwrap_or_default().to_owned();
    let count = admin
        .ok(&w.key_a, GET, &format!("/segments/{segment}/count"), None)
        .await?;
    assert_eq!(count["contacts"], 2, "Ann and Eve");
    let (status, _) = admin
        .call(&w.key_b, GET, &format!("/segments/{segment}/count"), None)
        .await?;
    assert_eq!(status, 404);

    // A segment campaign materializes its audience at start, with contact attributes as
    // template variables; a template variable the contacts lack is a validation error.
    let mut body = json!({"name": "winback", "provider_id": w.provider_a, "channel": "sms",
                          "template": "Hi {{nickname}}", "segment_id": segment});
    // Creates a campaign of `body` and starts it: refused, naming `what`.
    let refused_start = async |body: &Value, what: &str| -> Result<()> {
        let created = admin
            .ok(&w.key_a, POST, "/campaigns", Some(body.clone()))
            .await?;
        let id = created["id"].as_str().unwrap_or("");
        let (status, answer) = admin
            .call(&w.key_a, POST, &format!("/campaigns/{id}/start"), None)
            .await?;
        assert_eq!(status, 422, "{answer}");
        assert!(answer.to_string().contains(what), "{what}: {answer}");
        Ok(())
    };
    refused_start(&body, "nickname").await?;
    body["template"] = json!("Hi {{first_name}}, we miss you");
    // A contact that has the attribute but leaves it blank lacks it too: no "Hi , …".
    let (status, answer) = admin
        .upload(
            &w.key_a,
            "/contacts",
            "text/csv",
            "address,first_name,lifetime_value,last_purchase\n+33600000006, ,20000,2018-01-01\n",
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    refused_start(&body, "+33600000006").await?;
    sqlx::query("DELETE FROM contacts WHERE address = '+33600000006'")
        .execute(&w.env.pool)
        .await?;
    // Blank as an upload of the campaign's own audience judges it: a no-break space, say,
    // which PostgreSQL's C locale takes for no space (sent through JSON: a CSV's cells are
    // trimmed).
    let contact = json!({"address": "+33600000008", "attributes": {
        "first_name": "\u{a0}", "lifetime_value": 20000, "last_purchase": "2018-01-01"}});
    let (status, answer) = admin
        .upload(
            &w.key_a,
            "/contacts",
            "application/x-ndjson",
            format!("{contact}\n"),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    refused_start(&body, "+33600000008").await?;
    sqlx::query("DELETE FROM contacts WHERE address = '+33600000008'")
        .execute(&w.env.pool)
        .await?;
    // Nor one whose text would be too long for any provider once rendered (2 × 3,000).
    let long_name = format!(
        "address,first_name,lifetime_value,last_purchase\n+33600000007,{},20000,2018-01-01\n",
        "N".repeat(3_000)
    );
    let (status, answer) = admin
        .upload(&w.key_a, "/contacts", "text/csv", long_name)
        .await?;
    assert_eq!(status, 200, "{answer}");
    let mut twice = body.clone();
    twice["template"] = json!("Hi {{first_name}} {{first_name}}, we miss you");
    refused_start(&twice, "+33600000007").await?;
    sqlx::query("DELETE FROM contacts WHERE address = '+33600000007'")
        .execute(&w.env.pool)
        .await?;
    let campaign = admin.ok(&w.key_a, POST, "/campaigns", Some(body)).await?;
    let id = campaign["id"].as_str().unwrap_or_default();
    let started = admin
        .ok(&w.key_a, POST, &format!("/campaigns/{id}/start"), None)
        .await?;
    assert_eq!(started["progress"]["total"], 2);
    let mut addresses: Vec<String> = sqlx::query_scalar(
        "SELECT address FROM recipients WHERE campaign_id = $1::uuid ORDER BY address",
    )
    .bind(id)
    .fetch_all(&w.env.pool)
    .await?;
    addresses.sort();
    assert_eq!(addresses, vec!["+33600000001", "+33600000005"]);
    let shown = admin
        .ok(&w.key_a, GET, &format!("/segments/{segment}"), None)
        .await?;
    assert_eq!(shown["name"], "lapsed big spenders");
    let listed = admin.ok(&w.key_a, GET, "/contacts?limit=10", None).await?;
    let listed = &listed["items"];
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(5),
        "A's contacts only"
    );
    assert_eq!(
        listed[0]["attributes"]["lifetime_value"], 20000,
        "CSV numbers stay numbers"
    );
    assert_eq!(listed[3]["attributes"]["lifetime_value"], "n/a");
    let errors = admin
        .ok(&w.key_a, GET, &format!("/campaigns/{id}/errors"), None)
        .await?;
    assert_eq!(errors, json!([]));
    let theirs = admin.ok(&w.key_b, GET, "/segments", None).await?;
    assert_eq!(
        theirs.as_array().map(Vec::len),
        Some(0),
        "B sees none of A's segments"
    );
    Ok(())
}

/// A tenant has at most `HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT` providers in use (each is
/// a lane every worker consumes): 409 naming the setting past that, whether the tenant or
/// the operator creates it, other tenants and the operator's shared providers unaffected;
/// a retired one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_in_use_are_bounded_per_tenant() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env
        .admin_with(&[("HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT", "2")])
        .await?;
    let op = admin.operator_key.as_str();
    let (tenant_a, key_a, first) = admin.tenant_with_provider("a", &env.simulator_url).await?;
    let (_, key_b) = admin.tenant_with_key("b").await?;
    let endpoint = format!("{}/v1/messages", env.simulator_url);
    let create =
        async |key: &str, body: Value| admin.call(key, POST, "/providers", Some(body)).await;
    let (status, body) = create(&key_a, json!({"name": "second", "endpoint": endpoint})).await?;
    assert_eq!(status, 201, "{body}");
    for (who, key, body) in [
        (
            "the tenant",
            key_a.as_str(),
            json!({"name": "third", "endpoint": endpoint}),
        ),
        (
            "the operator, for the tenant",
            op,
            json!({"name": "third", "endpoint": endpoint, "tenant_id": tenant_a}),
        ),
    ] {
        let (status, body) = create(key, body).await?;
        assert_eq!(status, 409, "{who}: {body}");
        assert!(
            body.to_string()
                .contains("HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT"),
            "{who}: {body}"
        );
    }
    let (status, body) = create(&key_b, json!({"name": "theirs", "endpoint": endpoint})).await?;
    assert_eq!(status, 201, "another tenant's bound: {body}");
    for name in ["shared-1", "shared-2", "shared-3"] {
        let (status, body) = create(op, json!({"name": name, "endpoint": endpoint})).await?;
        assert_eq!(status, 201, "shared providers are not counted: {body}");
    }
    admin
        .ok(&key_a, Method::DELETE, &format!("/providers/{first}"), None)
        .await?;
    let (status, body) = create(&key_a, json!({"name": "third", "endpoint": endpoint})).await?;
    assert_eq!(status, 201, "a retired provider makes room: {body}");
    Ok(())
}

/// A tenant keeps at most `HERALD_ADMIN_MAX_SEGMENTS_PER_TENANT` segments (409 naming it
/// past that, other tenants unaffected), and deletes one no draft campaign waits to be
/// started with; a campaign that had it keeps its recipients and `segment_id` null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_bounded_per_tenant_and_deleted_once_no_draft_waits_for_them() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env
        .admin_with(&[("HERALD_ADMIN_MAX_SEGMENTS_PER_TENANT", "2")])
        .await?;
    let (_, key_a, provider) = admin.tenant_with_provider("a", &env.simulator_url).await?;
    let (_, key_b) = admin.tenant_with_key("b").await?;
    async fn segment(admin: &Admin, key: &str, name: &str) -> Result<(u16, Value)> {
        let body = json!({"name": name, "filter": "plan = 'gold'"});
        admin.call(key, POST, "/segments", Some(body)).await
    }
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    let (status, first) = segment(&admin, &key_a, "first").await?;
    assert_eq!(status, 201, "{first}");
    assert_eq!(segment(&admin, &key_a, "second").await?.0, 201);
    let (status, body) = segment(&admin, &key_a, "third").await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string()
            .contains("HERALD_ADMIN_MAX_SEGMENTS_PER_TENANT"),
        "{body}"
    );
    assert_eq!(
        segment(&admin, &key_b, "theirs").await?.0,
        201,
        "another tenant's bound"
    );

    let path = format!("/segments/{}", id(&first));
    assert_eq!(
        admin.call(&key_b, Method::DELETE, &path, None).await?.0,
        404,
        "another tenant's segment"
    );
    let draft = admin
        .ok(
            &key_a,
            POST,
            "/campaigns",
            Some(
                json!({"name": "c", "provider_id": provider, "channel": "sms",
                        "template": "Hi", "segment_id": id(&first)}),
            ),
        )
        .await?;
    let (status, body) = admin.call(&key_a, Method::DELETE, &path, None).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains(&id(&draft)),
        "names the draft: {body}"
    );
    admin
        .ok(
            &key_a,
            POST,
            &format!("/campaigns/{}/cancel", id(&draft)),
            None,
        )
        .await?;
    assert_eq!(
        admin.call(&key_a, Method::DELETE, &path, None).await?.0,
        204
    );
    assert_eq!(admin.call(&key_a, GET, &path, None).await?.0, 404);
    assert_eq!(
        admin.call(&key_a, Method::DELETE, &path, None).await?.0,
        404
    );
    let campaign = admin
        .ok(&key_a, GET, &format!("/campaigns/{}", id(&draft)), None)
        .await?;
    assert_eq!(campaign["segment_id"], Value::Null, "{campaign}");
    assert_eq!(segment(&admin, &key_a, "third").await?.0, 201, "room again");

    // A campaign started with a segment keeps its audience when the segment goes.
    let uploaded = admin
        .upload(
            &key_a,
            "/contacts",
            "text/csv",
            "address,plan\n+33600000001,gold\n+33600000002,gold\n+33600000003,silver\n",
        )
        .await?;
    assert_eq!(uploaded.0, 200, "{uploaded:?}");
    let segments = admin.ok(&key_a, GET, "/segments", None).await?;
    let second = segments
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "second"))
        .map(id)
        .unwrap_or_default();
    let started = admin
        .ok(
            &key_a,
            POST,
            "/campaigns",
            Some(
                json!({"name": "s", "provider_id": provider, "channel": "sms",
                        "template": "Hi", "segment_id": second}),
            ),
        )
        .await?;
    let campaign_path = format!("/campaigns/{}", id(&started));
    let started = admin
        .ok(&key_a, POST, &format!("{campaign_path}/start"), None)
        .await?;
    assert_eq!(started["progress"]["total"], 2, "{started}");
    assert_eq!(
        admin
            .call(&key_a, Method::DELETE, &format!("/segments/{second}"), None)
            .await?
            .0,
        204
    );
    let kept = admin.ok(&key_a, GET, &campaign_path, None).await?;
    assert_eq!(
        (
            &kept["status"],
            &kept["progress"]["total"],
            &kept["segment_id"]
        ),
        (&json!("scheduled"), &json!(2), &Value::Null),
        "{kept}"
    );
    Ok(())
}

/// A CSV cell becomes a number only when it reads back the same: a postcode keeps its
/// leading zero, a price its trailing one, and a number of 401 digits (which PostgreSQL's
/// `numeric` would hold, and no service could read back: every listing of the tenant's
/// contacts answered 500) stays the text it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_become_numbers_only_when_they_read_back_the_same() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let huge = format!("1{}", "0".repeat(400));
    let contacts =
        format!("address,zip,price,visits,score,huge\n+33600000001,02134,19.90,42,-3.5,{huge}\n");
    let uploaded = admin
        .upload(&w.key_a, "/contacts", "text/csv", contacts)
        .await?;
    assert_eq!(
        uploaded,
        (200, json!({"received": 1, "inserted": 1, "updated": 0}))
    );
    let listed = admin.ok(&w.key_a, GET, "/contacts", None).await?;
    let attributes = &listed["items"][0]["attributes"];
    assert_eq!(
        attributes,
        &json!({"zip": "02134", "price": "19.90", "visits": 42, "score": -3.5, "huge": huge})
    );
    // Numbers still compare as numbers.
    let segment = admin
        .ok(
            &w.key_a,
            POST,
            "/segments",
            Some(json!({"name": "regulars", "filter": "visits > 40 and score < 0"})),
        )
        .await?;
    let id = segment["id"].as_str().unwrap_or_default();
    let count = admin
        .ok(&w.key_a, GET, &format!("/segments/{id}/count"), None)
        .await?;
    assert_eq!(count["contacts"], 1);
    Ok(())
}

/// A contact holds at most as many attributes as a CSV has columns beside the address:
/// a JSON row with more is that row's error, and uploads whose attributes merge past it
/// are refused whole. Unbounded, they grew with every upload and were copied into every
/// recipient and message of a segment's campaigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_attributes_are_bounded_across_uploads() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let row = |keys: std::ops::Range<usize>| {
        let attributes: serde_json::Map<String, Value> =
            keys.map(|k| (format!("k{k}"), json!(k))).collect();
        format!(
            "{}\n",
            json!({"address": "+33600000001", "attributes": attributes})
        )
    };
    let (status, body) = admin
        .upload(&w.key_a, "/contacts", "application/x-ndjson", row(0..100))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["rows"][0]["field"], "variables", "{body}");
    let (status, body) = admin
        .upload(&w.key_a, "/contacts", "application/x-ndjson", row(0..60))
        .await?;
    assert_eq!(status, 200, "{body}");
    // Sixty more keys: a contact of 120.
    let (status, body) = admin
        .upload(&w.key_a, "/contacts", "application/x-ndjson", row(60..120))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "attributes", "{body}");
    let listed = admin.ok(&w.key_a, GET, "/contacts", None).await?;
    let kept = listed["items"][0]["attributes"]
        .as_object()
        .map(|a| a.len());
    assert_eq!(kept, Some(60), "nothing of the refused upload was kept");

    // Nor do they grow, merged, past what one row can make (128 KiB): uploads of ten
    // 4,000-byte values each, all within a row's bound.
    let long = |keys: std::ops::Range<usize>| {
        let attributes: serde_json::Map<String, Value> = keys
            .map(|k| (format!("long{k}"), json!("v".repeat(4_000))))
            .collect();
        format!(
            "{}\n",
            json!({"address": "+33600000002", "attributes": attributes})
        )
    };
    for keys in [0..10, 10..20, 20..30] {
        let (status, body) = admin
            .upload(&w.key_a, "/contacts", "application/x-ndjson", long(keys))
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = admin
        .upload(&w.key_a, "/contacts", "application/x-ndjson", long(30..40))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "attributes", "{body}");
    assert!(body.to_string().contains("bytes"), "{body}");
    // A row may make a contact past it as JSON text (a control character is six bytes
    // there): taken, and taken again when the same is uploaded again.
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let value = "\u{1}".repeat(4_000);
    let escaped = format!(
        "address,{}\n+33600000003,{}\n",
        names.join(","),
        [value.as_str(); 8].join(",")
    );
    for _ in 0..2 {
        let (status, body) = admin
            .upload(&w.key_a, "/contacts", "text/csv", escaped.clone())
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_upload_streams_and_progress_stays_fast() -> Result<()> {
    let w = world().await?;
    let campaign = draft(&w, "Hi {{first_name}}").await?;
    const ROWS: usize = 1_000_000;
    // Generated on the fly as a stream: neither side holds the file in memory.
    let stream = futures_stream(ROWS);
    let started = std::time::Instant::now();
    let (status, body) = w
        .admin
        .upload(
            &w.key_a,
            &format!("/campaigns/{campaign}/recipients"),
            "text/csv",
            stream,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"received": ROWS, "inserted": ROWS, "duplicates": 0})
    );
    eprintln!("1,000,000-row upload took {:?}", started.elapsed());

    // Progress comes from counters. Its speed is a benchmark figure (printed here, recorded
    // in BENCHMARKS.md), not a timed assertion; what is asserted is that it is exact.
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let progress = w
            .admin
            .ok(
                &w.key_a,
                GET,
                &format!("/campaigns/{campaign}/progress"),
                None,
            )
            .await?;
        times.push(t.elapsed());
        assert_eq!(progress["total"], ROWS);
        assert_eq!(progress["pending"], ROWS);
    }
    times.sort();
    eprintln!(
        "progress of a 1,000,000-recipient campaign: median {:?}",
        times[10]
    );
    Ok(())
}

fn futures_stream(rows: usize) -> reqwest::Body {
    let chunks = (0..rows.div_ceil(10_000)).map(move |chunk| {
        let mut text = if chunk == 0 {
            String::from("address,first_name\n")
        } else {
            String::new()
        };
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(rows) {
            text.push_str(&format!("+1555{i:07},R{i}\n"));
        }
        Ok::<_, std::io::Error>(text)
    });
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_names_an_overflow_provider_of_its_own_tenant() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let overflow = admin
        .ok(
            &w.key_a,
            POST,
            "/providers",
            Some(
                json!({"name": "backup", "endpoint": format!("{}/v1/messages", w.env.simulator_url),
                        "cost_per_message": 0.05}),
            ),
        )
        .await?;
    assert_eq!(overflow["cost_per_message"], 0.05);
    let overflow_id = overflow["id"].as_str().unwrap_or_default().to_owned();
    let (status, body) = admin
        .call(
            &w.key_a,
            POST,
            "/providers",
            Some(json!({"name": "x", "endpoint": "http://127.0.0.1:1/v1", "cost_per_message": -1})),
        )
        .await?;
    assert_eq!(status, 422);
    assert_eq!(field_errors(&body), vec!["cost_per_message"]);

    let campaign = |overflow: &str| {
        json!({"name": "c", "provider_id": w.provider_a, "overflow_provider_id": overflow,
               "channel": "sms", "template": "Hi"})
    };
    let created = admin
        .ok(&w.key_a, POST, "/campaigns", Some(campaign(&overflow_id)))
        .await?;
    assert_eq!(created["overflow_provider_id"], overflow_id.as_str());
    assert_eq!(created["by_provider"], json!([]));
    // The same provider twice, or another tenant's provider: refused, nothing written.
    let (status, body) = admin
        .call(&w.key_a, POST, "/campaigns", Some(campaign(&w.provider_a)))
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["overflow_provider_id".to_owned()])
    );
    let other = admin
        .ok(
            &w.key_b,
            POST,
            "/providers",
            Some(json!({"name": "b's", "endpoint": "http://127.0.0.1:1/v1"})),
        )
        .await?;
    let (status, body) = admin
        .call(
            &w.key_a,
            POST,
            "/campaigns",
            Some(campaign(other["id"].as_str().unwrap_or_default())),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["overflow_provider_id".to_owned()])
    );
    let listed = admin.ok(&w.key_a, GET, "/campaigns", None).await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    Ok(())
}

/// A provider's kind decides the request whatever the channel says (a Twilio Voice provider
/// places a call, a WhatsApp Cloud API one sends a WhatsApp message): a campaign, a message
/// or a tenant's default that binds a provider to a channel its requests do not carry is
/// refused, naming the field, and nothing is written. A generic provider carries any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_carries_only_the_channels_its_requests_can() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let twilio = |kind: &str| {
        json!({"name": kind, "kind": kind, "endpoint": w.env.simulator_url,
               "settings": {"from": "+15005550006"},
               "credentials": {"account_sid": herald_tests::TWILIO_SID, "auth_token": "t0ken"}})
    };
    let mut ids = Vec::new();
    for kind in ["twilio_voice", "twilio_sms"] {
        let provider = admin
            .ok(&w.key_a, POST, "/providers", Some(twilio(kind)))
            .await?;
        ids.push(provider["id"].as_str().unwrap_or_default().to_owned());
    }
    let (voice, texts) = (&ids[0], &ids[1]);
    let campaign = |provider: &str, overflow: Option<&str>, channel: &str| {
        json!({"name": "c", "provider_id": provider, "overflow_provider_id": overflow,
               "channel": channel, "template": "Hi"})
    };
    for (body, field, reason) in [
        (
            campaign(voice, None, "sms"),
            "provider_id",
            "only for channel voice",
        ),
        (
            campaign(texts, None, "voice"),
            "provider_id",
            "not for channel voice",
        ),
        (
            campaign(voice, Some(texts), "voice"),
            "overflow_provider_id",
            "not for channel voice",
        ),
    ] {
        let (status, answer) = admin.call(&w.key_a, POST, "/campaigns", Some(body)).await?;
        assert_eq!(
            (status, field_errors(&answer)),
            (422, vec![field.to_owned()]),
            "{answer}"
        );
        assert!(answer.to_string().contains(reason), "{answer}");
    }
    // What fits: calls through Twilio Voice, with a generic overflow; texts through Twilio
    // Messaging, WhatsApp through Twilio included.
    for body in [
        campaign(voice, Some(&w.provider_a), "voice"),
        campaign(texts, None, "sms"),
        campaign(texts, None, "whatsapp"),
    ] {
        admin.ok(&w.key_a, POST, "/campaigns", Some(body)).await?;
    }
    let listed = admin.ok(&w.key_a, GET, "/campaigns", None).await?;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );

    // A tenant's default for a channel, and a message.
    let default = format!("/tenants/{}/default-providers/sms", w.tenant_a);
    let (status, answer) = admin
        .call(&w.key_a, PUT, &default, Some(json!({"provider_id": voice})))
        .await?;
    assert_eq!(
        (status, field_errors(&answer)),
        (422, vec!["provider_id".to_owned()]),
        "{answer}"
    );
    let (status, answer) = admin
        .call(
            &w.key_a,
            POST,
            "/messages",
            Some(
                json!({"to": "+15551230001", "channel": "voice", "provider_id": texts,
                        "text": "Your code is 1234"}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.to_string().contains("not for channel voice"),
        "{answer}"
    );
    // A default set before providers were checked against channels: the answer says so.
    sqlx::query(
        "INSERT INTO tenant_default_providers (tenant_id, channel, provider_id) VALUES ($1::uuid, 'sms', $2::uuid)",
    )
    .bind(&w.tenant_a)
    .bind(voice)
    .execute(&w.env.pool)
    .await?;
    let (status, answer) = admin
        .call(
            &w.key_a,
            POST,
            "/messages",
            Some(json!({"to": "+15551230001", "channel": "sms", "text": "Your code is 1234"})),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&answer)),
        (422, vec!["provider_id".to_owned()]),
        "{answer}"
    );
    assert!(
        answer
            .to_string()
            .contains("the tenant's default for `sms` is a twilio_voice provider"),
        "{answer}"
    );
    let messages: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients r JOIN campaigns c
                                            ON c.id = r.campaign_id WHERE c.kind = 'messages'",
    )
    .fetch_one(&w.env.pool)
    .await?;
    assert_eq!(messages, 0, "a refused message was written");
    Ok(())
}

/// Numbers are read as people write them and stored in E.164, so one person written two
/// ways is one recipient; a tenant's default region reads numbers without a country code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_read_as_people_write_them() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let op = admin.operator_key.clone();
    let (status, body) = admin
        .call(
            &op,
            POST,
            "/tenants",
            Some(json!({"name": "bad-region", "default_region": "France"})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(field_errors(&body), ["default_region"]);
    let tenant = admin
        .ok(
            &op,
            POST,
            "/tenants",
            Some(json!({"name": "paris", "default_region": "FR"})),
        )
        .await?;
    assert_eq!(tenant["default_region"], "FR");
    let id = tenant["id"].as_str().unwrap_or_default();
    let key = admin
        .ok(
            &op,
            POST,
            &format!("/tenants/{id}/keys"),
            Some(json!({"name": "k"})),
        )
        .await?;
    let key = key["key"].as_str().unwrap_or_default().to_owned();
    let provider = admin
        .ok(
            &key,
            POST,
            "/providers",
            Some(
                json!({"name": "sim", "endpoint": format!("{}/v1/messages", w.env.simulator_url)}),
            ),
        )
        .await?;
    let campaign = admin
        .ok(
            &key,
            POST,
            "/campaigns",
            Some(
                json!({"name": "c", "provider_id": provider["id"], "channel": "sms",
                        "template": "Hi {{first_name}}"}),
            ),
        )
        .await?;
    let path = format!(
        "/campaigns/{}/recipients",
        campaign["id"].as_str().unwrap_or_default()
    );

    // One bad number refuses the upload, naming its row and why.
    let (status, body) = admin
        .upload(
            &key,
            &path,
            "text/csv",
            "address,first_name\n06 12 34 56 78,Ada\n+999 1234,Bob\n",
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["rows"][0]["row"], 2, "{body}");
    assert_eq!(body["error"]["rows"][0]["field"], "address", "{body}");
    assert!(
        body["error"]["rows"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("+999 1234") && r.contains("country code")),
        "{body}"
    );

    let uploaded = admin
        .upload(
            &key,
            &path,
            "text/csv",
            "address,first_name\n\
             06 12 34 56 78,Ada\n\
             +33 6 12 34 56 79,Bob\n\
             \"+1 (555) 123-4567\",Cy\n\
             +33612345678,Ada again\n",
        )
        .await?;
    assert_eq!(uploaded.0, 200, "{}", uploaded.1);
    assert_eq!(uploaded.1["inserted"], 3, "{}", uploaded.1);
    assert_eq!(uploaded.1["duplicates"], 1, "{}", uploaded.1);
    let listed = admin.ok(&key, GET, &path, None).await?;
    let addresses: Vec<String> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["address"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        addresses,
        ["+15551234567", "+33612345678", "+33612345679"],
        "{listed}"
    );
    Ok(())
}

/// Follows `path`'s cursor pages to the end (the path carries its filters and `limit`),
/// checking that each page but the last is full and hands out a cursor.
async fn all_pages(admin: &Admin, key: &str, path: &str, limit: usize) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page_path = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let page = admin.ok(key, GET, &page_path, None).await?;
        let list = page["items"].as_array().cloned().unwrap_or_default();
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_some() {
            assert_eq!(list.len(), limit, "a page before the last is full: {page}");
        } else {
            assert!(list.len() <= limit, "{page}");
        }
        items.extend(list);
        if cursor.is_none() {
            return Ok(items);
        }
    }
    anyhow::bail!("{path}: still more pages after 100")
}

fn field_of(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Campaigns, recipients and contacts come in cursor pages that neither repeat nor skip an
/// item, filter by status, tenant and name (address), and never show another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_cursor_pages_and_filter_by_status_tenant_and_name() -> Result<()> {
    let w = world().await?;
    let (admin, op) = (&w.admin, w.admin.operator_key.as_str());
    let provider_b = admin
        .ok(
            &w.key_b,
            POST,
            "/providers",
            Some(
                json!({"name": "b-sms", "endpoint": format!("{}/v1/messages", w.env.simulator_url),
                        "credentials": {"token": "b-s3cret"}}),
            ),
        )
        .await?;
    let provider_b = provider_b["id"].as_str().unwrap_or_default().to_owned();
    let mut mine = Vec::new();
    for name in [
        "Spring sale 1",
        "spring sale 2",
        "Autumn 100%",
        "spring sale 3",
        "winter",
    ] {
        let c = admin
            .ok(
                &w.key_a,
                POST,
                "/campaigns",
                Some(json!({"name": name, "provider_id": w.provider_a, "channel": "sms", "template": "Hi"})),
            )
            .await?;
        mine.push(c["id"].as_str().unwrap_or_default().to_owned());
    }
    for name in ["B spring", "B autumn"] {
        admin
            .ok(
                &w.key_b,
                POST,
                "/campaigns",
                Some(json!({"name": name, "provider_id": provider_b, "channel": "sms", "template": "Hi"})),
            )
            .await?;
    }

    // The operator pages through all seven, newest first, each exactly once.
    let all = all_pages(admin, op, "/campaigns?limit=3", 3).await?;
    assert_eq!(all.len(), 7);
    let ids = field_of(&all, "id");
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 7, "no campaign twice: {ids:?}");
    let created = field_of(&all, "created_at");
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    assert_eq!(all[0]["name"], "B autumn");
    assert_eq!(all[0]["tenant_name"], "tenant-b", "rows name their tenant");

    // Filters: tenant, name (any case, taken literally), status; together.
    let a = all_pages(
        admin,
        op,
        &format!("/campaigns?limit=2&tenant_id={}", w.tenant_a),
        2,
    )
    .await?;
    assert_eq!(
        field_of(&a, "id"),
        mine.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert!(a.iter().all(|c| c["tenant_name"] == "tenant-a"));
    let spring = all_pages(admin, op, "/campaigns?limit=10&name=SPRING", 10).await?;
    assert_eq!(
        field_of(&spring, "name"),
        [
            "B spring",
            "spring sale 3",
            "spring sale 2",
            "Spring sale 1"
        ]
    );
    let percent = all_pages(admin, op, "/campaigns?limit=10&name=%25", 10).await?;
    assert_eq!(
        field_of(&percent, "name"),
        ["Autumn 100%"],
        "`%` is no wildcard"
    );
    admin
        .ok(
            &w.key_a,
            POST,
            &format!("/campaigns/{}/cancel", mine[1]),
            None,
        )
        .await?;
    let drafts = all_pages(
        admin,
        op,
        "/campaigns?limit=10&status=draft&name=spring%20sale",
        10,
    )
    .await?;
    assert_eq!(
        field_of(&drafts, "name"),
        ["spring sale 3", "Spring sale 1"]
    );

    // A tenant key sees only its own, whatever tenant or cursor it passes.
    let asked = all_pages(
        admin,
        &w.key_b,
        &format!("/campaigns?limit=10&tenant_id={}", w.tenant_a),
        10,
    )
    .await?;
    assert!(asked.is_empty(), "{asked:?}");
    let first = admin.ok(op, GET, "/campaigns?limit=1", None).await?;
    let cursor = first["next_cursor"].as_str().unwrap_or_default();
    let rest = admin
        .ok(
            &w.key_a,
            GET,
            &format!("/campaigns?limit=10&cursor={cursor}"),
            None,
        )
        .await?;
    assert_eq!(
        field_of(
            rest["items"].as_array().map_or(&[][..], Vec::as_slice),
            "id"
        ),
        mine.iter().rev().cloned().collect::<Vec<_>>(),
        "B's newest campaign's cursor leads A to its own campaigns only"
    );

    // What is not a cursor, a size or a status is refused, naming the parameter.
    use base64::Engine;
    let far = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("[\"-10000-01-01T00:00:00Z\",\"{}\"]", mine[0]));
    let far = format!("cursor={far}");
    for (query, field) in [
        ("cursor=not-a-cursor", "cursor"),
        (far.as_str(), "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("status=finished", "status"),
        // A parameter the list does not take (misspelt, it would list everything).
        ("stauts=running", "stauts"),
    ] {
        let (status, body) = admin
            .call(op, GET, &format!("/campaigns?{query}"), None)
            .await?;
        assert_eq!(
            (status, field_errors(&body)),
            (422, vec![field.to_owned()]),
            "{query}"
        );
    }

    // Recipients: by address, in pages, by state or one address.
    let recipients = format!("/campaigns/{}/recipients", mine[0]);
    let csv: String = std::iter::once("address\n".to_owned())
        .chain((0..7).map(|i| format!("+3361234567{}\n", 6 - i)))
        .collect();
    let (status, body) = admin.upload(&w.key_a, &recipients, "text/csv", csv).await?;
    assert_eq!(status, 200, "{body}");
    let listed = all_pages(admin, &w.key_a, &format!("{recipients}?limit=3"), 3).await?;
    let addresses = field_of(&listed, "address");
    let mut sorted = addresses.clone();
    sorted.sort();
    assert_eq!((addresses.len(), &addresses), (7, &sorted));
    let pending = all_pages(
        admin,
        &w.key_a,
        &format!("{recipients}?limit=5&state=pending"),
        5,
    )
    .await?;
    assert_eq!(pending.len(), 7);
    let sent = all_pages(
        admin,
        &w.key_a,
        &format!("{recipients}?limit=5&state=sent"),
        5,
    )
    .await?;
    assert!(sent.is_empty());
    let one = all_pages(
        admin,
        &w.key_a,
        &format!("{recipients}?limit=5&address=%2B33612345673"),
        5,
    )
    .await?;
    assert_eq!(field_of(&one, "address"), ["+33612345673"]);
    // As a person writes the number: the same recipient.
    let written = all_pages(
        admin,
        &w.key_a,
        &format!("{recipients}?limit=5&address=%2B33%206%2012%2034%2056%2073"),
        5,
    )
    .await?;
    assert_eq!(field_of(&written, "address"), ["+33612345673"]);
    let (status, _) = admin.call(&w.key_b, GET, &recipients, None).await?;
    assert_eq!(status, 404, "B cannot list A's recipients");

    // Contacts: the operator filters by tenant; each tenant sees only its own.
    for (key, rows) in [
        (&w.key_a, "+33600000001\n+33600000002\n+33600000003\n"),
        (&w.key_b, "+33600000009\n"),
    ] {
        let (status, body) = admin
            .upload(key, "/contacts", "text/csv", format!("address\n{rows}"))
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    let everyone = all_pages(admin, op, "/contacts?limit=2", 2).await?;
    assert_eq!(everyone.len(), 4);
    let of_a = all_pages(
        admin,
        op,
        &format!("/contacts?limit=2&tenant_id={}", w.tenant_a),
        2,
    )
    .await?;
    assert_eq!(
        field_of(&of_a, "address"),
        ["+33600000001", "+33600000002", "+33600000003"]
    );
    let seen_by_b = all_pages(admin, &w.key_b, "/contacts?limit=2", 2).await?;
    assert_eq!(field_of(&seen_by_b, "address"), ["+33600000009"]);
    let found = all_pages(admin, op, "/contacts?limit=2&address=%2B33600000002", 2).await?;
    assert_eq!(field_of(&found, "address"), ["+33600000002"]);
    let written = all_pages(
        admin,
        op,
        "/contacts?limit=2&address=0033%206%2000%2000%2000%2002",
        2,
    )
    .await?;
    assert_eq!(field_of(&written, "address"), ["+33600000002"]);
    // A number without its country code is read in the default region of the tenants
    // listed, as their uploads read it: A's (France), not B's (none).
    let (status, body) = admin
        .call(
            op,
            Method::PATCH,
            &format!("/tenants/{}", w.tenant_a),
            Some(json!({"default_region": "FR"})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let national = "address=06%2000%2000%2000%2002";
    for (who, key) in [("A", w.key_a.as_str()), ("the operator", op)] {
        let found = all_pages(admin, key, &format!("/contacts?limit=2&{national}"), 2).await?;
        assert_eq!(field_of(&found, "address"), ["+33600000002"], "{who}");
    }
    let b_national = "address=06%2000%2000%2000%2009";
    for (who, key, query) in [
        ("B", w.key_b.as_str(), b_national.to_owned()),
        (
            "the operator, of B",
            op,
            format!("tenant_id={}&{b_national}", w.tenant_b),
        ),
    ] {
        let found = all_pages(admin, key, &format!("/contacts?limit=2&{query}"), 2).await?;
        assert!(found.is_empty(), "{who}: B has no region: {found:?}");
    }
    let national = all_pages(
        admin,
        &w.key_a,
        &format!("{recipients}?limit=5&address=06%2012%2034%2056%2073"),
        5,
    )
    .await?;
    assert_eq!(field_of(&national, "address"), ["+33612345673"]);
    // Each contact names its tenant, for an operator's listing across tenants.
    for contact in &everyone {
        let tenant = contact["tenant_id"].as_str().unwrap_or_default();
        let (status, tenant) = admin
            .call(op, GET, &format!("/tenants/{tenant}"), None)
            .await?;
        assert_eq!(status, 200, "{tenant}");
        assert!(contact["tenant_name"].is_string(), "{contact}");
        assert_eq!(contact["tenant_name"], tenant["name"], "{contact}");
    }

    // Every list refuses a parameter it cannot read with a 422 naming it, whether the
    // list's own checks or the query string's types caught it.
    for (query, field) in [
        ("/campaigns?tenant_id=nope".to_owned(), "tenant_id"),
        ("/campaigns?limit=ten".to_owned(), "limit"),
        (format!("{recipients}?state=lost"), "state"),
        (format!("{recipients}?limit=0"), "limit"),
        (format!("{recipients}?limit=-"), "limit"),
        (format!("{recipients}?cursor=not-a-cursor"), "cursor"),
        ("/contacts?tenant_id=nope".to_owned(), "tenant_id"),
        ("/contacts?limit=1001".to_owned(), "limit"),
        ("/contacts?cursor=not-a-cursor".to_owned(), "cursor"),
    ] {
        let (status, body) = admin.call(&w.key_a, GET, &query, None).await?;
        assert_eq!(
            (status, field_errors(&body)),
            (422, vec![field.to_owned()]),
            "{query}: {body}"
        );
    }
    Ok(())
}

/// A scheduled campaign past its expiry is completed without starting: recipients added to
/// it would never be sent (and ones committed just as the scheduler completes it were left
/// waiting in a finished campaign). An upload to it is refused (409), nothing added; one to
/// a scheduled campaign still ahead of its expiry is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_scheduled_campaign_past_its_expiry_is_refused() -> Result<()> {
    let w = world().await?;
    let csv = "address\n+33612345678\n";
    let mut answers = Vec::new();
    for expires_in in ["-1 minute", "1 day"] {
        let campaign = draft(&w, "Hi").await?;
        sqlx::query(
            "UPDATE campaigns SET status = 'scheduled', start_at = now() + interval '1 hour',
                    expires_at = now() + $2::interval WHERE id = $1::uuid",
        )
        .bind(&campaign)
        .bind(expires_in)
        .execute(&w.env.pool)
        .await?;
        let path = format!("/campaigns/{campaign}/recipients");
        let (status, body) = w.admin.upload(&w.key_a, &path, "text/csv", csv).await?;
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM recipients WHERE campaign_id = $1::uuid")
                .bind(&campaign)
                .fetch_one(&w.env.pool)
                .await?;
        answers.push((status, stored, body.to_string().contains("past its expiry")));
    }
    assert_eq!(answers, [(409, 0, true), (200, 1, false)]);
    Ok(())
}

/// An upload whose rows keep coming, each within the idle timeout, ends once it has taken
/// `HERALD_ADMIN_UPLOAD_TIMEOUT_MS` in all (408, nothing imported): it held its upload slot,
/// a database connection and its campaign's row for as long as its client liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_ends_once_it_has_taken_its_time_in_all() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env
        .admin_with(&[("HERALD_ADMIN_UPLOAD_TIMEOUT_MS", "10000")])
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    // A row a second for a minute.
    let rows = futures::stream::unfold(0u32, |i| async move {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let text = if i == 0 {
            "address,first_name\n".to_owned()
        } else {
            format!("+1555{i:07},R\n")
        };
        (i <= 60).then_some((Ok::<_, std::io::Error>(text), i + 1))
    });
    let started = std::time::Instant::now();
    let answer = admin
        .upload(
            &admin.operator_key,
            &format!("/contacts?tenant_id={tenant}"),
            "text/csv",
            reqwest::Body::wrap_stream(rows),
        )
        .await;
    let took = started.elapsed();
    // The answer may come while the client still sends, which may then fail to send.
    if let Ok((status, body)) = &answer {
        assert_eq!(*status, 408, "{body}");
    }
    assert!(
        took < std::time::Duration::from_secs(30),
        "ended after {took:?}: {answer:?}"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(kept, 0, "nothing was imported");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_start_checks_and_copies_one_state_of_the_contacts() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    admin
        .upload(
            &w.key_a,
            "/contacts",
            "text/csv",
            "address,first_name,plan\n+33600000001,Ann,gold\n",
        )
        .await?;
    let segment = admin
        .ok(
            &w.key_a,
            POST,
            "/segments",
            Some(json!({"name": "gold", "filter": "plan = 'gold'"})),
        )
        .await?;
    let campaign = admin
        .ok(
            &w.key_a,
            POST,
            "/campaigns",
            Some(
                json!({"name": "gold", "provider_id": w.provider_a, "channel": "sms",
                        "template": "Hi {{first_name}}!", "segment_id": segment["id"]}),
            ),
        )
        .await?;
    let id = campaign["id"].as_str().unwrap_or_default().to_owned();
    // An upload of the tenant's contacts, at its last statement: it blanks Ann's name and
    // adds a gold contact without one.
    let tenant: uuid::Uuid = w.tenant_a.parse()?;
    let mut upload = w.env.pool.begin().await?;
    herald_store::uploads::create(&mut upload).await?;
    sqlx::query(
        r#"INSERT INTO upload_rows VALUES (1, '+33600000001', '{"first_name": ""}'),
                                          (2, '+33600000002', '{"plan": "gold"}')"#,
    )
    .execute(&mut *upload)
    .await?;
    herald_store::contacts::upsert_staged(&mut upload, tenant, 100, 65_536).await?;
    // The start meanwhile waits for it, and then sees what it wrote: before, it checked
    // the contacts as they were and copied them as the upload left them ("Hi !").
    let path = format!("/campaigns/{id}/start");
    let start = admin.call(&w.key_a, POST, &path, None);
    tokio::pin!(start);
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(1), &mut start)
            .await
            .is_err(),
        "the start did not wait for the upload"
    );
    upload.commit().await?;
    let (status, answer) = start.await?;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("+33600000001"), "{answer}");
    Ok(())
}

/// A campaign's failure reasons group one cause into one row whatever differs per recipient
/// (Twilio's 21211 names the number, Meta's answers carry a trace id each), list the
/// commonest 50 and count the rest in a last row: before, 60 invalid numbers were 50 rows
/// of 1 and the other 10 were not shown at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reasons_group_one_cause_and_undelivered_recipients_are_found() -> Result<()> {
    let w = world().await?;
    let campaign = draft(&w, "Hi").await?;
    let csv: String = std::iter::once("address".to_owned())
        .chain((0..200).map(|i| format!("+3361234{i:04}")))
        .collect::<Vec<_>>()
        .join("\n");
    let (status, body) = w
        .admin
        .upload(
            &w.key_a,
            &format!("/campaigns/{campaign}/recipients"),
            "text/csv",
            csv,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Failures as the worker records them (the statement under test only reads them): 60
    // invalid numbers, 40 of Meta's with a trace id each, and 60 one-off reasons.
    let id: uuid::Uuid = campaign.parse()?;
    sqlx::query(
        "WITH numbered AS (
             SELECT id, row_number() OVER (ORDER BY id) AS n FROM recipients WHERE campaign_id = $1)
         UPDATE recipients r SET state = 'failed', last_error = CASE
             WHEN m.n <= 60 THEN 'twilio 21211 (HTTP 400): The ''To'' number +3361234' || lpad(m.n::text, 4, '0') || ' is not a valid phone number.'
             WHEN m.n <= 100 THEN 'whatsapp 131026 (HTTP 400): Message Undeliverable [fbtrace_id A' || md5(m.n::text) || ']'
             WHEN m.n <= 160 THEN 'HTTP 400: reason number ' || m.n
             END
         FROM numbered m WHERE r.id = m.id AND m.n <= 160",
    )
    .bind(id)
    .execute(&w.env.pool)
    .await?;

    let errors = w
        .admin
        .ok(
            &w.key_a,
            GET,
            &format!("/campaigns/{campaign}/errors"),
            None,
        )
        .await?;
    let rows = errors.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 51, "50 reasons and the rest: {errors}");
    assert_eq!(
        rows[0]["reason"],
        "twilio 21211 (HTTP 400): The 'To' number … is not a valid phone number."
    );
    assert_eq!(rows[0]["count"], 60);
    assert!(
        rows[0]["example"]
            .as_str()
            .is_some_and(|e| e.starts_with("twilio 21211 (HTTP 400): The 'To' number +3361234")),
        "{}",
        rows[0]
    );
    assert_eq!(
        (&rows[1]["reason"], &rows[1]["count"]),
        (
            &json!("whatsapp 131026 (HTTP 400): Message Undeliverable"),
            &json!(40)
        )
    );
    assert_eq!(rows[50]["reason"], "(12 other reasons)");
    assert_eq!(rows[50]["count"], 12);
    assert_eq!(rows[50]["example"], Value::Null);
    let total: i64 = rows.iter().filter_map(|r| r["count"].as_i64()).sum();
    assert_eq!(total, 160, "every failed recipient counted once");

    // Sent, never arrived: found by their delivery status.
    sqlx::query(
        "UPDATE recipients SET state = 'sent', delivery_status = 'undelivered', delivery_error = '30003'
         WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 AND state = 'pending'
                      ORDER BY id LIMIT 7)",
    )
    .bind(id)
    .execute(&w.env.pool)
    .await?;
    let undelivered = w
        .admin
        .ok(
            &w.key_a,
            GET,
            &format!("/campaigns/{campaign}/recipients?delivery=undelivered"),
            None,
        )
        .await?;
    let items = undelivered["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 7, "{undelivered}");
    assert!(items.iter().all(|r| r["delivery_error"] == "30003"));
    let (status, body) = w
        .admin
        .call(
            &w.key_a,
            GET,
            &format!("/campaigns/{campaign}/recipients?delivery=lost"),
            None,
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["delivery".to_owned()])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_is_deleted_by_its_tenant_and_no_segment_picks_it_any_more() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let contacts = "address,plan\n+33600000001,gold\n+33600000002,gold\n";
    let uploaded = admin
        .upload(&w.key_a, "/contacts", "text/csv", contacts)
        .await?;
    assert_eq!(uploaded.0, 200, "{uploaded:?}");
    let segment = admin
        .ok(
            &w.key_a,
            POST,
            "/segments",
            Some(json!({"name": "gold", "filter": "plan = 'gold'"})),
        )
        .await?;
    let count_path = format!("/segments/{}/count", segment["id"].as_str().unwrap_or(""));
    let count = admin.ok(&w.key_a, GET, &count_path, None).await?;
    assert_eq!(count["contacts"], 2);
    let listed = admin
        .ok(&w.key_a, GET, "/contacts?address=%2B33600000001", None)
        .await?;
    let id = listed["items"][0]["id"].as_i64().unwrap_or_default();
    let path = format!("/contacts/{id}");

    // Another tenant's key finds no such contact; its owner deletes it once.
    let (status, _) = admin.call(&w.key_b, Method::DELETE, &path, None).await?;
    assert_eq!(status, 404);
    let (status, body) = admin.call(&w.key_a, Method::DELETE, &path, None).await?;
    assert_eq!(status, 204, "{body}");
    let (status, _) = admin.call(&w.key_a, Method::DELETE, &path, None).await?;
    assert_eq!(status, 404);
    let (status, body) = admin
        .call(&w.key_a, Method::DELETE, "/contacts/not-a-number", None)
        .await?;
    assert_eq!(status, 400, "{body}");

    let count = admin.ok(&w.key_a, GET, &count_path, None).await?;
    assert_eq!(count["contacts"], 1);
    let listed = admin.ok(&w.key_a, GET, "/contacts", None).await?;
    let addresses: Vec<&str> = listed["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|c| c["address"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(addresses, ["+33600000002"]);
    // An upload of the same address makes it a contact again, anew.
    let again = admin
        .upload(
            &w.key_a,
            "/contacts",
            "text/csv",
            "address,plan\n+33600000001,gold\n",
        )
        .await?;
    assert_eq!(again.1["inserted"], 1, "{again:?}");
    Ok(())
}

/// A create sent again under its `Idempotency-Key` (its answer lost, say) answers the
/// campaign the first one made, marked replayed, and makes no second draft: sent again at
/// once, or by several at the same moment, by an operator naming the tenant or by the
/// tenant's own key. The key with another request is refused naming it; another tenant's
/// use of the same key is its own; a key is held 24 hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_created_again_under_its_idempotency_key_is_the_first_one() -> Result<()> {
    let w = world().await?;
    let admin = &w.admin;
    let create =
        async |api_key: &str, idempotency: &str, body: &Value| -> Result<(u16, bool, Value)> {
            let response = admin
                .http
                .post(format!("{}/api/v1/campaigns", admin.url))
                .bearer_auth(api_key)
                .header("Idempotency-Key", idempotency)
                .json(body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true");
            Ok((status, replayed, response.json().await?))
        };
    let body = json!({"name": "spring", "provider_id": w.provider_a, "channel": "sms",
                      "template": "Hi {{first_name}}"});
    let count = async |tenant: &str| -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM campaigns WHERE tenant_id = $1::uuid AND kind = 'campaign'",
        )
        .bind(tenant)
        .fetch_one(&w.env.pool)
        .await?)
    };

    let (status, replayed, first) = create(&w.key_a, "spring-1", &body).await?;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = create(&w.key_a, "spring-1", &body).await?;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again["id"], first["id"]);
    // The operator's request names the tenant: the same request.
    let mut named = body.clone();
    named["tenant_id"] = json!(w.tenant_a);
    let (status, replayed, by_operator) = create(&admin.operator_key, "spring-1", &named).await?;
    assert_eq!((status, replayed), (201, true), "{by_operator}");
    assert_eq!(by_operator["id"], first["id"]);
    assert_eq!(count(&w.tenant_a).await?, 1);

    // Another request under the key: refused, naming it, nothing made.
    let mut other = body.clone();
    other["name"] = json!("autumn");
    let (status, _, refused) = create(&w.key_a, "spring-1", &other).await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(field_errors(&refused), vec!["Idempotency-Key"]);
    let (status, _, refused) = create(&w.key_a, &"k".repeat(256), &body).await?;
    assert_eq!(
        (status, field_errors(&refused)),
        (422, vec!["Idempotency-Key".to_owned()])
    );
    assert_eq!(count(&w.tenant_a).await?, 1);

    // Sent by several at once under a new key: one campaign, every answer naming it. They
    // are held at their first look for the key until all have come, so that none sees
    // another's campaign there and each tries to make its own.
    let mut hold = w.env.pool.begin().await?;
    sqlx::query("LOCK TABLE campaign_idempotency IN SHARE MODE")
        .execute(&mut *hold)
        .await?;
    let release = async {
        herald_tests::wait_until(std::time::Duration::from_secs(10), || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%FROM campaign_idempotency%'",
            )
            .fetch_one(&w.env.pool)
            .await
            .is_ok_and(|n| n == 4)
        })
        .await
        .map_err(|_| anyhow::anyhow!("the creates did not all wait for the key"))?;
        hold.rollback().await?;
        Ok::<_, anyhow::Error>(())
    };
    let (answers, released) = tokio::join!(
        // The operator's: a tenant's requests take turns, a few at a time.
        futures::future::join_all((0..4).map(|_| create(&admin.operator_key, "spring-2", &named))),
        release
    );
    released?;
    let mut ids = std::collections::HashSet::new();
    let mut made = 0;
    for answer in answers {
        let (status, replayed, campaign) = answer?;
        assert_eq!(status, 201, "{campaign}");
        made += usize::from(!replayed);
        ids.insert(campaign["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!((ids.len(), made), (1, 1), "{ids:?}");
    assert_eq!(count(&w.tenant_a).await?, 2);

    // Tenant B's key "spring-1" is its own.
    let provider_b = admin
        .ok(
            &w.key_b,
            POST,
            "/providers",
            Some(
                json!({"name": "b's", "endpoint": format!("{}/v1/messages", w.env.simulator_url)}),
            ),
        )
        .await?;
    let mut b_body = body.clone();
    b_body["provider_id"] = provider_b["id"].clone();
    let (status, replayed, b_campaign) = create(&w.key_b, "spring-1", &b_body).await?;
    assert_eq!((status, replayed), (201, false), "{b_campaign}");
    assert_ne!(b_campaign["id"], first["id"]);

    // A day later the key is free again: a new campaign.
    let a_day_ago = |key: &'static str| {
        sqlx::query(
            "UPDATE campaign_idempotency SET created_at = now() - interval '25 hours'
             WHERE key = $1 AND tenant_id = $2::uuid",
        )
        .bind(key)
        .bind(&w.tenant_a)
        .execute(&w.env.pool)
    };
    a_day_ago("spring-1").await?;
    let (status, replayed, later) = create(&w.key_a, "spring-1", &other).await?;
    assert_eq!((status, replayed), (201, false), "{later}");
    assert_ne!(later["id"], first["id"]);
    assert_eq!(count(&w.tenant_a).await?, 3);
    // The leader's housekeeping releases keys past their day (spring-2 here; spring-1 was
    // released above, and taken again).
    a_day_ago("spring-2").await?;
    assert_eq!(
        herald_store::campaigns::release_keys(&w.env.pool, 100).await?,
        1
    );

    // An upload sent again adds nobody twice.
    let path = format!(
        "/campaigns/{}/recipients",
        first["id"].as_str().unwrap_or_default()
    );
    let csv = "address,first_name\n+15550000001,Ann\n+15550000002,Bob\n".to_owned();
    let mut inserted = Vec::new();
    for _ in 0..2 {
        let (status, body) = admin
            .upload(&w.key_a, &path, "text/csv", csv.clone())
            .await?;
        assert_eq!(status, 200, "{body}");
        inserted.push((body["inserted"].clone(), body["duplicates"].clone()));
    }
    assert_eq!(inserted, [(json!(2), json!(0)), (json!(0), json!(2))]);
    Ok(())
}

/// A provider is retired once nothing unfinished names it: then nothing new may, lists leave
/// it out, and it is still shown (with when it was retired) to whoever sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_is_retired_once_nothing_unfinished_names_it() -> Result<()> {
    let w = world().await?;
    let (admin, op) = (&w.admin, w.admin.operator_key.as_str());
    let provider = format!("/providers/{}", w.provider_a);
    let retire = async |key: &str, path: &str| admin.call(key, Method::DELETE, path, None).await;
    let listed = async |key: &str, query: &str| -> Result<Vec<String>> {
        let list = admin
            .ok(key, GET, &format!("/providers{query}"), None)
            .await?;
        Ok(list
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default())
    };

    // Named by the tenant's default: refused, saying so.
    let default = format!("/tenants/{}/default-providers/sms", w.tenant_a);
    admin
        .ok(
            &w.key_a,
            PUT,
            &default,
            Some(json!({"provider_id": w.provider_a})),
        )
        .await?;
    let (status, body) = retire(&w.key_a, &provider).await?;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("default sms provider"), "{body}");
    admin.ok(&w.key_a, Method::DELETE, &default, None).await?;
    // Named as a default's overflow: refused too.
    let other = admin
        .ok(
            &w.key_a,
            POST,
            "/providers",
            Some(json!({"name": "other", "endpoint": format!("{}/v1/messages", w.env.simulator_url)})),
        )
        .await?;
    admin
        .ok(
            &w.key_a,
            PUT,
            &default,
            Some(json!({"provider_id": other["id"], "overflow_provider_id": w.provider_a})),
        )
        .await?;
    let (status, body) = retire(&w.key_a, &provider).await?;
    assert_eq!(status, 409, "{body}");
    admin.ok(&w.key_a, Method::DELETE, &default, None).await?;
    // Named by a draft: refused, naming it; cancelled, it is retired.
    let campaign = draft(&w, "Hi {{first_name}}").await?;
    let (status, body) = retire(&w.key_a, &provider).await?;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&campaign), "{body}");
    // Another tenant's key: as if it did not exist.
    let (status, _) = retire(&w.key_b, &provider).await?;
    assert_eq!(status, 404);
    admin
        .ok(
            &w.key_a,
            POST,
            &format!("/campaigns/{campaign}/cancel"),
            Some(json!({})),
        )
        .await?;
    let retired = admin.ok(&w.key_a, Method::DELETE, &provider, None).await?;
    assert!(retired["retired_at"].is_string(), "{retired}");
    // Again: the same, retired when it first was.
    let again = admin.ok(&w.key_a, Method::DELETE, &provider, None).await?;
    assert_eq!(again["retired_at"], retired["retired_at"]);
    let shown = admin.ok(&w.key_a, GET, &provider, None).await?;
    assert_eq!(shown["retired_at"], retired["retired_at"]);
    assert!(!listed(&w.key_a, "").await?.contains(&w.provider_a));
    assert!(
        listed(&w.key_a, "?retired=true")
            .await?
            .contains(&w.provider_a)
    );
    assert!(
        !listed(&w.key_b, "?retired=true")
            .await?
            .contains(&w.provider_a)
    );

    // Nothing new names it: a campaign, a default, a message; each refusal names the field.
    let (status, body) = admin
        .call(
            &w.key_a,
            POST,
            "/campaigns",
            Some(
                json!({"name": "c", "provider_id": w.provider_a, "channel": "sms",
                        "template": "Hi"}),
            ),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["provider_id".to_owned()]),
        "{body}"
    );
    assert!(body.to_string().contains("retired"), "{body}");
    let (status, body) = admin
        .call(
            &w.key_a,
            PUT,
            &default,
            Some(json!({"provider_id": w.provider_a})),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["provider_id".to_owned()]),
        "{body}"
    );
    let (status, body) = admin
        .call(
            &w.key_a,
            POST,
            "/messages",
            Some(
                json!({"to": "+15551230001", "channel": "sms", "provider_id": w.provider_a,
                        "text": "Your code is 1234"}),
            ),
        )
        .await?;
    assert_eq!(
        (status, field_errors(&body)),
        (422, vec!["provider_id".to_owned()]),
        "{body}"
    );

    // A shared provider: the operator's to retire; while a tenant's messages through it are
    // not final (no pipeline runs here: they wait), refused.
    let shared = admin
        .ok(
            op,
            POST,
            "/providers",
            Some(json!({"name": "shared", "endpoint": format!("{}/v1/messages", w.env.simulator_url)})),
        )
        .await?;
    let shared = format!("/providers/{}", shared["id"].as_str().unwrap_or_default());
    admin
        .ok(
            &w.key_a,
            POST,
            "/messages",
            Some(json!({"to": "+15551230001", "channel": "sms",
                        "provider_id": shared.trim_start_matches("/providers/"),
                        "text": "Your code is 1234"})),
        )
        .await?;
    let (status, body) = retire(&w.key_a, &shared).await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = retire(op, &shared).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains("transactional messages"),
        "{body}"
    );
    // The message cancelled (final): nothing unfinished names it.
    let waiting = admin.ok(&w.key_a, GET, "/messages", None).await?;
    let message = waiting["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    admin
        .ok(
            &w.key_a,
            POST,
            &format!("/messages/{message}/cancel"),
            Some(json!({})),
        )
        .await?;
    let retired = admin.ok(op, Method::DELETE, &shared, None).await?;
    assert!(retired["retired_at"].is_string(), "{retired}");

    // Through the CLI: a provider of its own, retired, then listed only with --retired.
    let spare = admin
        .ok(
            &w.key_a,
            POST,
            "/providers",
            Some(json!({"name": "spare", "endpoint": format!("{}/v1/messages", w.env.simulator_url)})),
        )
        .await?;
    let spare = spare["id"].as_str().unwrap_or_default().to_owned();
    let cli = |args: &[&str]| -> Result<String> {
        let mut all = vec![
            "--url",
            admin.url.as_str(),
            "--key",
            w.key_a.as_str(),
            "provider",
        ];
        all.extend_from_slice(args);
        let out = w.env.run_binary("herald", &all, &[])?;
        anyhow::ensure!(out.status.success(), "{args:?}: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let said = cli(&["retire", &spare])?;
    assert!(
        said.lines()
            .any(|l| l.starts_with("retired") && !l.ends_with('-')),
        "{said}"
    );
    assert!(!cli(&["list"])?.contains(&spare));
    assert!(cli(&["list", "--retired"])?.contains(&spare));
    Ok(())
}
