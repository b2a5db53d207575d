//! Receipts: the status callbacks a provider posts about each message or call it took, as
//! the real ones do — late, possibly out of order, sometimes twice, sometimes before the send
//! was even answered — and signed the way each API signs them:
//!
//! - Twilio: a form post to the request's `StatusCallback` URL, `X-Twilio-Signature` keyed
//!   with the auth token of the request's Basic credentials; messages report `sent` then
//!   `delivered` (or `undelivered`, error 30003); calls report the `StatusCallbackEvent`s
//!   asked for (`initiated`, `ringing`, `answered` → `in-progress`, and always the final
//!   `completed`, or `no-answer`).
//! - WhatsApp: JSON notifications to the app's webhook URL (`--whatsapp-webhook-url`),
//!   `X-Hub-Signature-256` keyed with the app secret: `sent`, `delivered` (or `failed`,
//!   131026), maybe `read`, each echoing `biz_opaque_callback_data`.
//! - Generic: Herald's receipt format to the request's `callback_url`, `X-Herald-Signature`
//!   keyed with `--webhook-secret`: `sent`, then `delivered` (or `undelivered`).
//!
//! [`plan`] decides what to send when (a pure function of the configuration and random
//! draws); [`Courier`] sends it, retrying what is not answered 2xx like providers do.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::sync::{Semaphore, oneshot};

use crate::apis::Api;
use crate::behaviour::sample_latency;
use crate::config::BehaviourConfig;
use crate::routes::AppState;

/// Where a message's receipts go, and the secret that signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Twilio { url: String, auth_token: String },
    WhatsApp { url: String, app_secret: String },
    Herald { url: String, secret: String },
}

/// A message or call the simulator took, as its receipts describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub api: Api,
    /// The provider's id, as the send's answer gave it (`SM…`, `CA…`, `wamid.…`, `sim_…`).
    pub message_id: String,
    /// Herald's reference (the request's idempotency key), echoed where the API does.
    pub key: Option<String>,
    pub to: String,
    pub from: String,
    pub account_sid: String,
    pub phone_number_id: String,
    pub destination: Option<Destination>,
    /// Twilio calls: the progress events asked for (`StatusCallbackEvent`).
    pub call_events: Vec<String>,
}

/// One receipt to send, `at` after the send was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    /// In the API's own spelling.
    pub status: &'static str,
    pub error_code: Option<&'static str>,
    /// The call is over with this one.
    pub ends_call: bool,
}

/// Uniform draws a plan consumes: whether the message fails, whether it is read, and two per
/// receipt (its delay, whether it is sent twice).
pub struct Draws<'a> {
    pub fails: f64,
    pub read: f64,
    pub each: &'a mut dyn FnMut() -> [f64; 3],
}

/// The receipts a message or call gets, in the order they are planned (shuffled delays may
/// send them in another order).
pub fn plan(sent: &Sent, cfg: &BehaviourConfig, draws: Draws<'_>) -> Vec<Planned> {
    let fails = draws.fails < cfg.delivery_failure_rate;
    let statuses: Vec<(&'static str, Option<&'static str>)> = match sent.api {
        Api::TwilioMessages => vec![
            ("sent", None),
            if fails {
                ("undelivered", Some("30003"))
            } else {
                ("delivered", None)
            },
        ],
        Api::Generic => vec![
            ("sent", None),
            if fails {
                ("undelivered", Some("30003"))
            } else {
                ("delivered", None)
            },
        ],
        Api::WhatsApp => {
            let mut s = vec![("sent", None)];
            if fails {
                s.push(("failed", Some("131026")));
            } else {
                s.push(("delivered", None));
                if draws.read < cfg.read_rate {
                    s.push(("read", None));
                }
            }
            s
        }
        Api::TwilioCalls => {
            let mut s = vec![("initiated", None), ("ringing", None)];
            if fails {
                s.push(("no-answer", None));
            } else {
                s.push(("in-progress", None));
                s.push(("completed", None));
            }
            s
        }
    };
    let call_duration = Duration::from_millis(cfg.call_duration_ms);
    let mut out = Vec::new();
    let mut last = Duration::ZERO;
    for (status, error_code) in statuses {
        let [delay, twice, again] = (draws.each)();
        let delay = sample_latency(&cfg.receipt_delay, [delay, 0.5]);
        let mut at = if cfg.receipt_shuffle {
            delay
        } else {
            last + delay
        };
        if status == "completed" {
            at = last + call_duration;
        }
        last = last.max(at);
        let ends_call = sent.api == Api::TwilioCalls && matches!(status, "completed" | "no-answer");
        if !wanted(sent, status) {
            continue;
        }
        let planned = Planned {
            at,
            status,
            error_code,
            ends_call,
        };
        if twice < cfg.receipt_duplicate_rate {
            let copy = Planned {
                at: at + sample_latency(&cfg.receipt_delay, [again, 0.5]),
                ends_call: false,
                ..planned.clone()
            };
            out.push(planned);
            out.push(copy);
        } else {
            out.push(planned);
        }
    }
    out
}

/// Whether the API posts this status: Twilio posts a call's progress events only when asked,
/// its final status always.
fn wanted(sent: &Sent, status: &str) -> bool {
    if sent.api != Api::TwilioCalls {
        return true;
    }
    let event = match status {
        "initiated" => "initiated",
        "ringing" => "ringing",
        "in-progress" => "answered",
        _ => return true,
    };
    sent.call_events.iter().any(|e| e == event)
}

/// One receipt's request: where, the form (Twilio) or JSON body, and the signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub url: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub signature: (&'static str, String),
}

/// The request of one receipt; `None` when the message's receipts go nowhere.
pub fn render(sent: &Sent, planned: &Planned, sequence: usize, now_ms: u64) -> Option<Post> {
    let destination = sent.destination.as_ref()?;
    let now = chrono::DateTime::from_timestamp_millis(i64::try_from(now_ms).unwrap_or(0))
        .unwrap_or_default();
    Some(match destination {
        Destination::Twilio { url, auth_token } => {
            let mut params: Vec<(String, String)> = vec![
                ("AccountSid".into(), sent.account_sid.clone()),
                ("From".into(), sent.from.clone()),
                ("To".into(), sent.to.clone()),
                ("ApiVersion".into(), "2010-04-01".into()),
            ];
            if sent.api == Api::TwilioCalls {
                params.extend([
                    ("CallSid".into(), sent.message_id.clone()),
                    ("CallStatus".into(), planned.status.to_owned()),
                    ("Direction".into(), "outbound-api".into()),
                    ("CallbackSource".into(), "call-progress-events".into()),
                    ("SequenceNumber".into(), sequence.to_string()),
                    (
                        "Timestamp".into(),
                        now.format("%a, %d %b %Y %H:%M:%S +0000").to_string(),
                    ),
                ]);
                if planned.status == "completed" {
                    params.push(("CallDuration".into(), "1".into()));
                }
            } else {
                params.extend([
                    ("MessageSid".into(), sent.message_id.clone()),
                    ("SmsSid".into(), sent.message_id.clone()),
                    ("MessageStatus".into(), planned.status.to_owned()),
                    ("SmsStatus".into(), planned.status.to_owned()),
                ]);
                if matches!(planned.status, "delivered" | "undelivered") {
                    params.push((
                        "RawDlrDoneDate".into(),
                        now.format("%y%m%d%H%M").to_string(),
                    ));
                }
            }
            if let Some(code) = planned.error_code {
                params.push(("ErrorCode".into(), code.to_owned()));
            }
            let signature = herald_shared::signature::twilio(auth_token, url, &params);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .finish();
            Post {
                url: url.clone(),
                body: body.into_bytes(),
                content_type: "application/x-www-form-urlencoded",
                signature: ("X-Twilio-Signature", signature),
            }
        }
        Destination::WhatsApp { url, app_secret } => {
            let mut status = json!({
                "id": sent.message_id,
                "status": planned.status,
                "timestamp": (now_ms / 1000).to_string(),
                "recipient_id": sent.to.trim_start_matches('+'),
                "conversation": {"id": "simulated", "origin": {"type": "marketing"}},
                "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing"},
            });
            if let Some(key) = &sent.key {
                status["biz_opaque_callback_data"] = json!(key);
            }
            if let Some(code) = planned.error_code {
                status["errors"] = json!([{"code": code.parse::<i64>().unwrap_or(0),
                    "title": "Message undeliverable", "message": "Message undeliverable",
                    "error_data": {"details": "simulated delivery failure"}}]);
            }
            let body = json!({"object": "whatsapp_business_account", "entry": [{
                "id": "simulated-waba", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": sent.from, "phone_number_id": sent.phone_number_id},
                    "statuses": [status]}}]}]})
            .to_string()
            .into_bytes();
            let signature = herald_shared::signature::hub(app_secret, &body);
            Post {
                url: url.clone(),
                body,
                content_type: "application/json",
                signature: ("X-Hub-Signature-256", signature),
            }
        }
        Destination::Herald { url, secret } => {
            let body = json!({
                "id": sent.message_id,
                "status": planned.status,
                "reference": sent.key,
                "error_code": planned.error_code,
                "timestamp": now.to_rfc3339(),
            })
            .to_string()
            .into_bytes();
            let signature = herald_shared::signature::hub(secret, &body);
            Post {
                url: url.clone(),
                body,
                content_type: "application/json",
                signature: ("X-Herald-Signature", signature),
            }
        }
    })
}

/// Receipts posted at once, at most: a receiver that is slow makes receipts queue here
/// rather than opening ever more connections.
const POSTS_IN_FLIGHT: usize = 256;
/// How long a receipt that is not answered 2xx is posted again by Meta and generic
/// providers (backing off from 200 ms to 5 s between tries): Meta retries for hours; this is
/// long enough to outlast the fault suite's outages.
const RETRY_FOR: Duration = Duration::from_secs(180);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// Twilio, by its documented defaults (a callback URL's connection overrides `#rc=1`,
/// `#rp=ct`, `#tt=15000`), posts a status callback again only when the connection failed,
/// once, within 15 s in all: an HTTP answer, a 503 too, ends it.
const TWILIO_RETRIES: u32 = 1;
const TWILIO_TOTAL: Duration = Duration::from_secs(15);

/// Whether a receipt's post is tried again after its `tries`-th try, `elapsed` after the
/// first, the next `pause` away: `answered` if an HTTP answer came (not 2xx, not 4xx),
/// else the connection failed.
fn tries_again(
    twilio: bool,
    answered: bool,
    tries: u32,
    elapsed: Duration,
    pause: Duration,
) -> bool {
    if twilio {
        !answered && tries <= TWILIO_RETRIES && elapsed + pause < TWILIO_TOTAL
    } else {
        elapsed + pause < RETRY_FOR
    }
}

/// Sends receipts in the background.
#[derive(Clone)]
pub struct Courier {
    http: reqwest::Client,
    posts: Arc<Semaphore>,
}

impl Default for Courier {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(POSTS_IN_FLIGHT)
                .tcp_nodelay(true)
                .build()
                .unwrap_or_default(),
            posts: Arc::new(Semaphore::new(POSTS_IN_FLIGHT)),
        }
    }
}

impl Courier {
    /// Sends `plan`'s receipts for `sent`, each at its time from now. If `first_sent` is
    /// given, it is told when the first receipt has been delivered (or given up), so the
    /// send can be answered after it.
    pub fn deliver(
        &self,
        app: Arc<AppState>,
        sent: Sent,
        plan: Vec<Planned>,
        first_sent: Option<oneshot::Sender<()>>,
    ) {
        let courier = self.clone();
        let is_call = sent.api == Api::TwilioCalls;
        // Nowhere to post and no call to time: no task (a task and a timer per message
        // showed in the simulator's profile of a bench run without receipts).
        if sent.destination.is_none() && !is_call {
            return;
        }
        if is_call {
            app.call_started();
        }
        tokio::spawn(async move {
            let sent = Arc::new(sent);
            let mut first_sent = first_sent;
            let mut order: Vec<(usize, Planned)> = plan.into_iter().enumerate().collect();
            order.sort_by_key(|(_, p)| p.at);
            let started = tokio::time::Instant::now();
            let mut call_ended = false;
            // One message's receipts go one after another, each at its time (or as soon as
            // the one before it is through, when the receiver is slow).
            for (sequence, planned) in order {
                if first_sent.is_none() {
                    tokio::time::sleep_until(started + planned.at).await;
                }
                let ends_call = planned.ends_call;
                if ends_call && !call_ended {
                    // Counted as ended once its final status is on its way: before Herald
                    // can have taken it, so the simulator never counts fewer live calls
                    // than Herald holds lines for.
                    call_ended = true;
                    app.call_ended();
                }
                courier
                    .clone()
                    .post(app.clone(), sent.clone(), planned, sequence)
                    .await;
                if let Some(told) = first_sent.take() {
                    let _ = told.send(());
                }
            }
            if is_call && !call_ended {
                app.call_ended();
            }
        });
    }

    async fn post(self, app: Arc<AppState>, sent: Arc<Sent>, planned: Planned, sequence: usize) {
        let Some(Post {
            url,
            body,
            content_type,
            signature: (header, signature),
        }) = render(&sent, &planned, sequence, app.now_ms())
        else {
            return;
        };
        let Ok(_slot) = self.posts.acquire().await else {
            return;
        };
        let twilio = matches!(sent.destination, Some(Destination::Twilio { .. }));
        let mut pause = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let answer = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .header(header, &signature)
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    app.receipt_posted(ReceiptResult::Accepted);
                    return;
                }
                Ok(response) if response.status().is_client_error() => {
                    tracing::debug!(status = %response.status(), %url, "receipt refused");
                    app.receipt_posted(ReceiptResult::Refused);
                    return;
                }
                answer if tries_again(twilio, answer.is_ok(), tries, started.elapsed(), pause) => {
                    app.receipt_posted(ReceiptResult::Retried);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                _ => {
                    app.receipt_posted(ReceiptResult::Failed);
                    return;
                }
            }
        }
    }
}

/// How one receipt post ended (or that it is tried again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptResult {
    Accepted,
    Refused,
    Retried,
    Failed,
}

/// The draws of one receipt: its delay, and whether (and how long after) it is sent twice.
pub fn receipt_draws<R: Rng + ?Sized>(rng: &mut R) -> [f64; 3] {
    [rng.random(), rng.random(), rng.random()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_posts_a_callback_again_only_after_a_failed_connection_once() {
        let ms = Duration::from_millis;
        // A 503 (or any answer) ends it; a failed connection is tried once more, within 15 s.
        assert!(!tries_again(true, true, 1, ms(0), ms(200)));
        assert!(tries_again(true, false, 1, ms(0), ms(200)));
        assert!(!tries_again(true, false, 2, ms(300), ms(400)));
        assert!(!tries_again(true, false, 1, ms(14_900), ms(200)));
        // Meta and generic providers try again for as long as RETRY_FOR.
        assert!(tries_again(false, true, 5, ms(60_000), ms(5_000)));
        assert!(!tries_again(false, true, 50, RETRY_FOR, ms(5_000)));
    }
    use crate::config::Latency;

    fn sent(api: Api) -> Sent {
        Sent {
            api,
            message_id: "SM1".into(),
            key: Some("herald-00000000000000000000000000000007-42".into()),
            to: "+15551234567".into(),
            from: "+15005550006".into(),
            account_sid: "AC1".into(),
            phone_number_id: "1055".into(),
            destination: Some(Destination::Twilio {
                url: "http://127.0.0.1:9/webhooks/twilio/p?ref=x".into(),
                auth_token: "t0k3n".into(),
            }),
            call_events: Vec::new(),
        }
    }

    fn planned(api: Api, cfg: &BehaviourConfig, fails: f64) -> Vec<Planned> {
        let mut n = 0.0;
        let mut each = move || {
            n += 0.1;
            [n, 0.99, 0.5]
        };
        plan(
            &sent(api),
            cfg,
            Draws {
                fails,
                read: 0.0,
                each: &mut each,
            },
        )
    }

    #[test]
    fn messages_are_sent_then_delivered_in_order() {
        let cfg = BehaviourConfig {
            receipt_delay: Latency::Fixed(100.0),
            ..Default::default()
        };
        let plan = planned(Api::TwilioMessages, &cfg, 0.9);
        let statuses: Vec<_> = plan.iter().map(|p| (p.status, p.at.as_millis())).collect();
        assert_eq!(statuses, [("sent", 100), ("delivered", 200)]);
        let failing = BehaviourConfig {
            delivery_failure_rate: 1.0,
            ..cfg.clone()
        };
        let plan = planned(Api::TwilioMessages, &failing, 0.9);
        assert_eq!(plan[1].status, "undelivered");
        assert_eq!(plan[1].error_code, Some("30003"));
    }

    #[test]
    fn calls_report_only_the_events_asked_for_and_end_after_their_duration() {
        let cfg = BehaviourConfig {
            receipt_delay: Latency::Fixed(10.0),
            call_duration_ms: 3_000,
            ..Default::default()
        };
        let finals = planned(Api::TwilioCalls, &cfg, 0.9);
        assert_eq!(
            finals.len(),
            1,
            "only the final status by default: {finals:?}"
        );
        assert_eq!(finals[0].status, "completed");
        assert_eq!(finals[0].at, Duration::from_millis(3_030));
        assert!(finals[0].ends_call);
        let mut with_events = sent(Api::TwilioCalls);
        with_events.call_events = vec!["initiated".into(), "answered".into()];
        let mut each = || [0.0, 0.99, 0.0];
        let events = plan(
            &with_events,
            &cfg,
            Draws {
                fails: 0.9,
                read: 0.0,
                each: &mut each,
            },
        );
        let statuses: Vec<_> = events.iter().map(|p| p.status).collect();
        assert_eq!(statuses, ["initiated", "in-progress", "completed"]);
    }

    #[test]
    fn duplicates_and_shuffles() {
        let cfg = BehaviourConfig {
            receipt_delay: Latency::Uniform {
                min: 0.0,
                max: 1000.0,
            },
            receipt_duplicate_rate: 1.0,
            receipt_shuffle: true,
            ..Default::default()
        };
        let mut draws = [[0.9, 0.0, 0.1], [0.1, 0.0, 0.1]].into_iter();
        let mut each = move || draws.next().unwrap_or([0.0; 3]);
        let events = plan(
            &sent(Api::Generic),
            &cfg,
            Draws {
                fails: 0.9,
                read: 0.0,
                each: &mut each,
            },
        );
        assert_eq!(events.len(), 4);
        // Shuffled: the delivery is planned before the sent.
        assert!(events[2].at < events[0].at, "{events:?}");
    }

    #[test]
    fn twilio_receipts_are_signed_over_the_callback_url() {
        let s = sent(Api::TwilioMessages);
        let planned = Planned {
            at: Duration::ZERO,
            status: "delivered",
            error_code: None,
            ends_call: false,
        };
        let post = render(&s, &planned, 0, 1_785_000_000_000).unwrap();
        assert_eq!(post.url, "http://127.0.0.1:9/webhooks/twilio/p?ref=x");
        assert_eq!(post.content_type, "application/x-www-form-urlencoded");
        assert_eq!(post.signature.0, "X-Twilio-Signature");
        let params: Vec<(String, String)> =
            form_urlencoded::parse(&post.body).into_owned().collect();
        assert!(herald_shared::signature::verify_twilio(
            "t0k3n",
            &post.url,
            &params,
            &post.signature.1
        ));
        assert!(params.contains(&("MessageStatus".into(), "delivered".into())));
    }
}
