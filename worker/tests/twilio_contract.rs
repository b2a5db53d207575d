//! Twilio's requests, checked against Twilio's own OpenAPI document (`twilio_api_v2010.json`)
//! by a validating mock (Stoplight Prism started with `--errors`), with the account's auth
//! token and with an API key (`SK…`): every request Herald makes must be one the document
//! accepts. Run by `scripts/contract.sh` (part of the test command), which starts the mock
//! and sets `HERALD_TWILIO_MOCK`; ignored otherwise.

use herald_shared::domain::Channel;
use herald_shared::provider_config::{ProviderConfig, parse};
use herald_shared::queue::message::{DispatchMessage, FORMAT_VERSION};
use herald_worker::adapters::{self, HttpRequest};
use serde_json::{Value, json};
use uuid::Uuid;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const SK: &str = "SK0123456789abcdef0123456789abcdef";
const MG: &str = "MG0123456789abcdef0123456789abcdef";

fn mock() -> String {
    std::env::var("HERALD_TWILIO_MOCK").expect("HERALD_TWILIO_MOCK: run scripts/contract.sh")
}

fn message(channel: Channel) -> DispatchMessage {
    DispatchMessage {
        v: FORMAT_VERSION,
        recipient_id: 42,
        seq: 3,
        tenant_id: Uuid::nil(),
        campaign_id: Uuid::from_u128(7),
        provider_id: Uuid::nil(),
        channel,
        to: "+15551234567".into(),
        body: "Hi Ada & <Bob>, 100% \"ready\"?".into(),
        expires_at: None,
        variables: serde_json::Map::new(),
    }
}

fn config(kind: &str, settings: Value, credentials: Value) -> ProviderConfig {
    parse(kind, &mock(), &settings, &credentials).expect("a valid provider")
}

fn token() -> Value {
    json!({"account_sid": SID, "auth_token": "t0k3n"})
}

fn api_key() -> Value {
    json!({"account_sid": SID, "api_key_sid": SK, "api_key_secret": "k3y-s3cr3t"})
}

/// Sends `request` to the mock: its status and body.
async fn send(request: HttpRequest) -> (u16, String) {
    let mut builder = reqwest::Client::new().request(request.method, &request.url);
    for header in &request.headers {
        builder = builder.header(&header.name, &header.value);
    }
    let response = builder
        .body(request.body)
        .send()
        .await
        .expect("the mock answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn accepted(what: &str, request: HttpRequest) {
    let shown = format!("{request:?}");
    let (mut status, mut body) = send(request.clone()).await;
    // Twilio's arrays in a form are one parameter per value (`StatusCallbackEvent=initiated
    // &StatusCallbackEvent=ringing`, OpenAPI's default `form` style, exploded), which Prism
    // does not read as an array: it reads `Name[]=` instead. Those keys are sent again that
    // way, so that their values are checked too.
    let arrays = misread_arrays(status, &body);
    if !arrays.is_empty() {
        (status, body) = send(with_bracketed(request, &arrays)).await;
    }
    assert!(
        (200..300).contains(&status) || only_the_mocks_answer_is_off(status, &body),
        "{what}: Twilio's document refuses the request ({status}): {body}\n{shown}"
    );
}

/// The form keys Prism refused only because it read repeated keys as one value.
fn misread_arrays(status: u16, body: &str) -> Vec<String> {
    let Ok(answer) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let violations = answer["validation"].as_array().cloned().unwrap_or_default();
    let arrays: Vec<String> = violations
        .iter()
        .filter(|v| {
            v["location"][0] == "body"
                && v["code"] == "type"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("must be array"))
        })
        .filter_map(|v| v["location"][1].as_str().map(str::to_owned))
        .collect();
    if status == 422 && arrays.len() == violations.len() {
        arrays
    } else {
        Vec::new()
    }
}

fn with_bracketed(mut request: HttpRequest, keys: &[String]) -> HttpRequest {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&request.body)
        .map(|(k, v)| {
            let k = if keys.iter().any(|key| *key == k) {
                format!("{k}[]")
            } else {
                k.into_owned()
            };
            (k, v.into_owned())
        })
        .collect();
    request.body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes();
    request
}

/// Prism also checks the answer it makes up from the document's examples, and some of
/// Twilio's examples break the document's own formats (relative `uri`s in list pages): a 500
/// whose every violation is in the response says nothing against the request.
fn only_the_mocks_answer_is_off(status: u16, body: &str) -> bool {
    let Ok(answer) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let violations = answer["validation"].as_array().cloned().unwrap_or_default();
    status == 500
        && !violations.is_empty()
        && violations.iter().all(|v| v["location"][0] == "response")
}

#[tokio::test]
#[ignore = "needs the validating mock: scripts/contract.sh"]
async fn messages_and_calls_match_twilios_document() {
    let callback = Some("https://hooks.example/webhooks/twilio/p");
    for (auth, credentials) in [("auth token", token()), ("API key", api_key())] {
        let sms = config(
            "twilio_sms",
            json!({"from": "+15005550006"}),
            credentials.clone(),
        );
        let service = config(
            "twilio_sms",
            json!({"messaging_service_sid": MG}),
            credentials.clone(),
        );
        let whatsapp = config(
            "twilio_sms",
            json!({"from": "whatsapp:+15005550006"}),
            credentials.clone(),
        );
        let spoken = config(
            "twilio_voice",
            json!({"from": "+15005550006"}),
            credentials.clone(),
        );
        let fetched = config(
            "twilio_voice",
            json!({"from": "+15005550006", "url": "https://twiml.example/hello.xml"}),
            credentials.clone(),
        );
        let sms_message = message(Channel::Sms);
        let expiring = DispatchMessage {
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::minutes(10)),
            ..message(Channel::Sms)
        };
        for (what, provider, m) in [
            ("an SMS from a number", &sms, &sms_message),
            ("an SMS that expires (ValidityPeriod)", &sms, &expiring),
            ("an SMS through a messaging service", &service, &sms_message),
            ("a WhatsApp message", &whatsapp, &message(Channel::Whatsapp)),
            (
                "a call speaking inline TwiML",
                &spoken,
                &message(Channel::Voice),
            ),
            ("a call fetching TwiML", &fetched, &message(Channel::Voice)),
        ] {
            let request = adapters::build(provider, m, callback).expect("a request");
            accepted(&format!("{what} ({auth})"), request).await;
            let lookup = adapters::lookup(provider, m).expect("Twilio can look up");
            accepted(&format!("the lookup of {what} ({auth})"), lookup).await;
        }
    }
}

/// The mock does refuse what the document does not allow, so the test above can fail.
#[tokio::test]
#[ignore = "needs the validating mock: scripts/contract.sh"]
async fn the_mock_refuses_what_the_document_does_not_allow() {
    let sms = config("twilio_sms", json!({"from": "+15005550006"}), token());
    let mut request = adapters::build(&sms, &message(Channel::Sms), None).expect("a request");
    // No `To`: required by the document.
    let body = String::from_utf8(request.body.clone()).unwrap_or_default();
    request.body = body
        .split('&')
        .filter(|pair| !pair.starts_with("To="))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
    let (status, body) = send(request).await;
    assert_eq!(status, 422, "a message without To: {body}");
    // No credentials: the document requires HTTP Basic.
    let mut anonymous = adapters::build(&sms, &message(Channel::Sms), None).expect("a request");
    anonymous
        .headers
        .retain(|h| !h.name.eq_ignore_ascii_case("authorization"));
    let (status, body) = send(anonymous).await;
    assert_eq!(status, 401, "a message without credentials: {body}");
}
