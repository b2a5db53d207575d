//! The simulator's behaviour configuration: parsing of the CLI/JSON forms and validation.
//!
//! Every textual form parsed here is also what [`std::fmt::Display`] prints, so the
//! configuration round-trips through `GET /control/config` and `PUT /control/config`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde::ser::Serializer;
use serde_json::{Map, Value};
use thiserror::Error;

/// Largest latency or hold time accepted anywhere in the configuration: one hour.
pub const MAX_DURATION_MS: f64 = 3_600_000.0;
/// Largest request count accepted in a rate limit.
pub const MAX_RATE_LIMIT: u64 = 10_000_000;
/// Longest rate-limit window accepted: one day.
pub const MAX_WINDOW_MS: u64 = 86_400_000;

/// Why a configuration value was rejected. The message never repeats the value itself
/// (clap and the control API show the value and the field next to it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("expected fixed:MS, uniform:MIN-MAX, normal:MEAN,STDDEV or exp:MEAN (milliseconds)")]
    LatencyFormat,
    #[error("{0}")]
    LatencyValue(&'static str),
    #[error("expected a number between 0.0 and 1.0")]
    Rate,
    #[error("error_rate + timeout_rate + lose_rate + fail_after_send_rate must not exceed 1.0")]
    RateSum,
    #[error("expected an http:// or https:// URL (or null)")]
    Url,
    #[error("expected a non-empty string of visible ASCII")]
    Secret,
    #[error("expected a whole number of milliseconds between 0 and 3600000")]
    HoldMs,
    #[error(
        "expected N/WINDOW with N between 1 and 10000000 and WINDOW like 100ms, 1s, 5m or 1h (at most 24h)"
    )]
    RateLimit,
    #[error("expected a whole number between 0 and 4294967295")]
    FailFirst,
    #[error("expected an HTTP status between 400 and 599")]
    FailStatus,
    #[error("expected '+' followed by up to 15 digits (or 'none')")]
    RejectPrefix,
    #[error("expected {0}")]
    JsonType(&'static str),
    #[error("unknown field")]
    UnknownField,
}

/// A configuration error tied to the field it concerns (used by the control API).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {error}")]
pub struct FieldError {
    pub field: String,
    pub error: ConfigError,
}

impl FieldError {
    fn new(field: &str, error: ConfigError) -> Self {
        Self {
            field: field.to_owned(),
            error,
        }
    }
}

/// Latency distribution applied before answering, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(f64),
    Uniform { min: f64, max: f64 },
    Normal { mean: f64, stddev: f64 },
    Exp { mean: f64 },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed(0.0)
    }
}

fn parse_ms(s: &str) -> Result<f64, ConfigError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| ConfigError::LatencyValue("milliseconds must be numbers"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(ConfigError::LatencyValue(
            "milliseconds must be finite and not negative",
        ));
    }
    if v > MAX_DURATION_MS {
        return Err(ConfigError::LatencyValue(
            "milliseconds must be at most 3600000",
        ));
    }
    Ok(v)
}

impl FromStr for Latency {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, args) = s.trim().split_once(':').ok_or(ConfigError::LatencyFormat)?;
        match kind.trim().to_ascii_lowercase().as_str() {
            "fixed" => Ok(Latency::Fixed(parse_ms(args)?)),
            "uniform" => {
                let (min, max) = args.split_once('-').ok_or(ConfigError::LatencyFormat)?;
                let (min, max) = (parse_ms(min)?, parse_ms(max)?);
                if min > max {
                    return Err(ConfigError::LatencyValue("uniform MIN must not exceed MAX"));
                }
                Ok(Latency::Uniform { min, max })
            }
            "normal" => {
                let (mean, stddev) = args.split_once(',').ok_or(ConfigError::LatencyFormat)?;
                Ok(Latency::Normal {
                    mean: parse_ms(mean)?,
                    stddev: parse_ms(stddev)?,
                })
            }
            "exp" => Ok(Latency::Exp {
                mean: parse_ms(args)?,
            }),
            _ => Err(ConfigError::LatencyFormat),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Fixed(ms) => write!(f, "fixed:{ms}"),
            Latency::Uniform { min, max } => write!(f, "uniform:{min}-{max}"),
            Latency::Normal { mean, stddev } => write!(f, "normal:{mean},{stddev}"),
            Latency::Exp { mean } => write!(f, "exp:{mean}"),
        }
    }
}

/// At most `limit` admitted requests in any window of `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub window_ms: u64,
}

fn parse_window(s: &str) -> Result<u64, ConfigError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let count: u64 = if digits.is_empty() {
        1
    } else {
        digits.parse().map_err(|_| ConfigError::RateLimit)?
    };
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(ConfigError::RateLimit),
    };
    let window = count.checked_mul(unit_ms).ok_or(ConfigError::RateLimit)?;
    if window == 0 || window > MAX_WINDOW_MS {
        return Err(ConfigError::RateLimit);
    }
    Ok(window)
}

impl FromStr for RateLimit {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (limit, window) = s.trim().split_once('/').ok_or(ConfigError::RateLimit)?;
        let limit: u64 = limit.trim().parse().map_err(|_| ConfigError::RateLimit)?;
        if limit == 0 || limit > MAX_RATE_LIMIT {
            return Err(ConfigError::RateLimit);
        }
        Ok(RateLimit {
            limit,
            window_ms: parse_window(window)?,
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.window_ms;
        if w.is_multiple_of(3_600_000) {
            write!(f, "{}/{}h", self.limit, w / 3_600_000)
        } else if w.is_multiple_of(60_000) {
            write!(f, "{}/{}m", self.limit, w / 60_000)
        } else if w.is_multiple_of(1_000) {
            write!(f, "{}/{}s", self.limit, w / 1_000)
        } else {
            write!(f, "{}/{}ms", self.limit, w)
        }
    }
}

/// Parses a latency distribution (see [`Latency`]'s `FromStr`).
pub fn parse_latency(s: &str) -> Result<Latency, ConfigError> {
    s.parse()
}

/// True for the textual spellings of "no value" accepted by optional settings.
fn is_none_word(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("off")
}

/// Parses an optional rate limit: `none`, `off` or an empty string mean "no limit".
pub fn parse_rate_limit(s: &str) -> Result<Option<RateLimit>, ConfigError> {
    if is_none_word(s) {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}

/// Parses an optional reject prefix (`+` then up to 15 digits); `none`, `off` or empty mean none.
pub fn parse_reject_prefix(s: &str) -> Result<Option<String>, ConfigError> {
    if is_none_word(s) {
        return Ok(None);
    }
    let s = s.trim();
    let digits = s.strip_prefix('+').ok_or(ConfigError::RejectPrefix)?;
    if digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::RejectPrefix);
    }
    Ok(Some(s.to_owned()))
}

/// Parses a probability in `[0.0, 1.0]`.
pub fn parse_rate(s: &str) -> Result<f64, ConfigError> {
    let v: f64 = s.trim().parse().map_err(|_| ConfigError::Rate)?;
    check_rate(v)
}

fn check_rate(v: f64) -> Result<f64, ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::Rate)
    }
}

/// Parses a hold time in whole milliseconds (at most one hour).
pub fn parse_hold_ms(s: &str) -> Result<u64, ConfigError> {
    let v: u64 = s.trim().parse().map_err(|_| ConfigError::HoldMs)?;
    check_hold_ms(v)
}

fn check_hold_ms(v: u64) -> Result<u64, ConfigError> {
    if v as f64 <= MAX_DURATION_MS {
        Ok(v)
    } else {
        Err(ConfigError::HoldMs)
    }
}

/// Parses the fail-first count.
pub fn parse_fail_first(s: &str) -> Result<u32, ConfigError> {
    s.trim().parse().map_err(|_| ConfigError::FailFirst)
}

/// Parses the status used for fail-first answers (400–599).
pub fn parse_fail_status(s: &str) -> Result<u16, ConfigError> {
    let v: u16 = s.trim().parse().map_err(|_| ConfigError::FailStatus)?;
    check_fail_status(v)
}

fn check_fail_status(v: u16) -> Result<u16, ConfigError> {
    if (400..=599).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::FailStatus)
    }
}

/// Parses an optional webhook URL: `none`, `off` or empty mean none.
pub fn parse_webhook_url(s: &str) -> Result<Option<String>, ConfigError> {
    if is_none_word(s) {
        return Ok(None);
    }
    let s = s.trim();
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && s.len() > "https://".len()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(ConfigError::Url)
    }
}

/// Parses a signing secret.
pub fn parse_secret(s: &str) -> Result<String, ConfigError> {
    if !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        Ok(s.to_owned())
    } else {
        Err(ConfigError::Secret)
    }
}

/// The complete behaviour of the simulated provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BehaviourConfig {
    #[serde(serialize_with = "display")]
    pub latency: Latency,
    pub error_rate: f64,
    pub timeout_rate: f64,
    pub timeout_hold_ms: u64,
    /// Fraction of requests accepted (sent, with their receipts) whose answer is lost: the
    /// connection is dropped after the latency, without a response.
    pub lose_rate: f64,
    /// Fraction of requests accepted (sent, with their receipts) that are answered a 5xx all
    /// the same, as a provider that failed after taking the message, or a gateway before it,
    /// does: Twilio's 20500 on a 500, Meta's code 2 on a 500, a generic 500.
    pub fail_after_send_rate: f64,
    /// The provider is down: every request is answered 503 (its API's "unavailable").
    pub outage: bool,
    #[serde(serialize_with = "display_opt")]
    pub rate_limit: Option<RateLimit>,
    pub fail_first: u32,
    pub fail_status: u16,
    pub reject_prefix: Option<String>,
    /// Numbers that replied STOP to the Twilio sender: Twilio's Messages API refuses them
    /// (21610); other APIs send to them.
    pub opted_out_prefix: Option<String>,
    /// Replay the first answer to a repeated idempotency key instead of sending a second
    /// message (the generic API's contract, if the provider offers it; Twilio and Meta
    /// do not, so it is off by default).
    pub honour_idempotency_keys: bool,
    /// Delay before each receipt (after the previous one, or after the send if shuffled).
    #[serde(serialize_with = "display")]
    pub receipt_delay: Latency,
    /// Each receipt's delay counts from the send rather than from the previous receipt,
    /// so receipts arrive in any order.
    pub receipt_shuffle: bool,
    /// Fraction of receipts sent twice.
    pub receipt_duplicate_rate: f64,
    /// Fraction of sends whose first receipt is delivered before the send is answered.
    pub receipt_early_rate: f64,
    /// Fraction of messages that end undelivered (calls: no-answer) instead of delivered.
    pub delivery_failure_rate: f64,
    /// Fraction of delivered WhatsApp messages that are then read.
    pub read_rate: f64,
    /// How long a call lasts from its answer to its final status.
    pub call_duration_ms: u64,
    /// Where WhatsApp status notifications go (set per Meta app, not per request).
    pub whatsapp_webhook_url: Option<String>,
    /// The Meta app's secret that signs them (`X-Hub-Signature-256`).
    pub whatsapp_app_secret: String,
    /// The generic API's receipt secret (`X-Herald-Signature`).
    pub webhook_secret: String,
    /// A credential the provider no longer accepts (a rotated Twilio auth token, an expired
    /// Meta access token): requests that present it are answered 401 (Twilio 20003, Meta
    /// 190), like requests without credentials.
    #[serde(serialize_with = "redacted")]
    pub revoked_credential: Option<String>,
    /// The Twilio account's auth token, which signs the callbacks of requests made with an
    /// API key (`SK…`), as Twilio does; unset, those requests get no callbacks. (A request
    /// made with the auth token has its callbacks signed with it.)
    #[serde(serialize_with = "redacted")]
    pub twilio_auth_token: Option<String>,
    /// The provider has moved: every message request is answered 307 with a `Location`
    /// under this base URL, and nothing is sent.
    pub redirect_to: Option<String>,
    /// Every message request is taken (sent, with its receipts) and answered `303 See
    /// Other` to the message's resource: a provider behind a layer that turns a POST's
    /// answer into a redirect, which a client that follows no redirect never reads.
    pub see_other: bool,
}

fn redacted<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<set>"),
        None => s.serialize_none(),
    }
}

fn display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_opt<T: fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// The simulator's default secrets; tests and the demo give their providers the same.
pub const DEFAULT_APP_SECRET: &str = "simulator-app-secret";
pub const DEFAULT_WEBHOOK_SECRET: &str = "simulator-webhook-secret";

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            latency: Latency::default(),
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_hold_ms: 60_000,
            lose_rate: 0.0,
            fail_after_send_rate: 0.0,
            outage: false,
            rate_limit: None,
            fail_first: 0,
            fail_status: 500,
            reject_prefix: None,
            opted_out_prefix: None,
            honour_idempotency_keys: false,
            receipt_delay: Latency::Fixed(50.0),
            receipt_shuffle: false,
            receipt_duplicate_rate: 0.0,
            receipt_early_rate: 0.0,
            delivery_failure_rate: 0.0,
            read_rate: 0.0,
            call_duration_ms: 1_000,
            whatsapp_webhook_url: None,
            whatsapp_app_secret: DEFAULT_APP_SECRET.to_owned(),
            webhook_secret: DEFAULT_WEBHOOK_SECRET.to_owned(),
            revoked_credential: None,
            twilio_auth_token: None,
            redirect_to: None,
            see_other: false,
        }
    }
}

impl BehaviourConfig {
    /// Checks the constraints that involve more than one field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.error_rate + self.timeout_rate + self.lose_rate + self.fail_after_send_rate
            > 1.0 + 1e-9
        {
            return Err(FieldError::new("timeout_rate", ConfigError::RateSum));
        }
        Ok(())
    }

    /// Returns a copy of `self` with the fields present in `patch` replaced (a partial
    /// update, as accepted by `PUT /control/config`). Unknown fields are rejected.
    pub fn patched(&self, patch: &Map<String, Value>) -> Result<Self, FieldError> {
        let mut next = self.clone();
        for (field, value) in patch {
            let f = |error| FieldError::new(field, error);
            match field.as_str() {
                "latency" => {
                    let s = value.as_str().ok_or(f(ConfigError::JsonType("a string")))?;
                    next.latency = s.parse().map_err(f)?;
                }
                "error_rate" => next.error_rate = json_rate(value).map_err(f)?,
                "timeout_rate" => next.timeout_rate = json_rate(value).map_err(f)?,
                "lose_rate" => next.lose_rate = json_rate(value).map_err(f)?,
                "fail_after_send_rate" => {
                    next.fail_after_send_rate = json_rate(value).map_err(f)?
                }
                "receipt_duplicate_rate" => {
                    next.receipt_duplicate_rate = json_rate(value).map_err(f)?
                }
                "receipt_early_rate" => next.receipt_early_rate = json_rate(value).map_err(f)?,
                "delivery_failure_rate" => {
                    next.delivery_failure_rate = json_rate(value).map_err(f)?
                }
                "read_rate" => next.read_rate = json_rate(value).map_err(f)?,
                "receipt_delay" => {
                    let s = value.as_str().ok_or(f(ConfigError::JsonType("a string")))?;
                    next.receipt_delay = s.parse().map_err(f)?;
                }
                "outage" => {
                    next.outage = value
                        .as_bool()
                        .ok_or(f(ConfigError::JsonType("true or false")))?;
                }
                "receipt_shuffle" => {
                    next.receipt_shuffle = value
                        .as_bool()
                        .ok_or(f(ConfigError::JsonType("true or false")))?;
                }
                "see_other" => {
                    next.see_other = value
                        .as_bool()
                        .ok_or(f(ConfigError::JsonType("true or false")))?;
                }
                "honour_idempotency_keys" => {
                    next.honour_idempotency_keys = value
                        .as_bool()
                        .ok_or(f(ConfigError::JsonType("true or false")))?;
                }
                "call_duration_ms" => {
                    let v = value.as_u64().ok_or(f(ConfigError::HoldMs))?;
                    next.call_duration_ms = check_hold_ms(v).map_err(f)?;
                }
                "whatsapp_webhook_url" => {
                    next.whatsapp_webhook_url = match value {
                        Value::Null => None,
                        Value::String(s) => parse_webhook_url(s).map_err(f)?,
                        _ => return Err(f(ConfigError::JsonType("a string or null"))),
                    }
                }
                "whatsapp_app_secret" => {
                    let s = value.as_str().ok_or(f(ConfigError::Secret))?;
                    next.whatsapp_app_secret = parse_secret(s).map_err(f)?;
                }
                "webhook_secret" => {
                    let s = value.as_str().ok_or(f(ConfigError::Secret))?;
                    next.webhook_secret = parse_secret(s).map_err(f)?;
                }
                "timeout_hold_ms" => {
                    let v = value.as_u64().ok_or(f(ConfigError::HoldMs))?;
                    next.timeout_hold_ms = check_hold_ms(v).map_err(f)?;
                }
                "rate_limit" => {
                    next.rate_limit = match value {
                        Value::Null => None,
                        Value::String(s) => parse_rate_limit(s).map_err(f)?,
                        _ => return Err(f(ConfigError::JsonType("a string or null"))),
                    }
                }
                "fail_first" => {
                    next.fail_first = value
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or(f(ConfigError::FailFirst))?;
                }
                "fail_status" => {
                    let v = value
                        .as_u64()
                        .and_then(|v| u16::try_from(v).ok())
                        .ok_or(f(ConfigError::FailStatus))?;
                    next.fail_status = check_fail_status(v).map_err(f)?;
                }
                "redirect_to" => {
                    next.redirect_to = match value {
                        Value::Null => None,
                        Value::String(s)
                            if s.starts_with("http://") || s.starts_with("https://") =>
                        {
                            Some(s.clone())
                        }
                        _ => return Err(f(ConfigError::JsonType("an http(s) URL or null"))),
                    }
                }
                "twilio_auth_token" => {
                    next.twilio_auth_token = match value {
                        Value::Null => None,
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        _ => return Err(f(ConfigError::JsonType("a non-empty string or null"))),
                    }
                }
                "revoked_credential" => {
                    next.revoked_credential = match value {
                        Value::Null => None,
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        _ => return Err(f(ConfigError::JsonType("a non-empty string or null"))),
                    }
                }
                "reject_prefix" => {
                    next.reject_prefix = match value {
                        Value::Null => None,
                        Value::String(s) => parse_reject_prefix(s).map_err(f)?,
                        _ => return Err(f(ConfigError::JsonType("a string or null"))),
                    }
                }
                "opted_out_prefix" => {
                    next.opted_out_prefix = match value {
                        Value::Null => None,
                        Value::String(s) => parse_reject_prefix(s).map_err(f)?,
                        _ => return Err(f(ConfigError::JsonType("a string or null"))),
                    }
                }
                _ => return Err(f(ConfigError::UnknownField)),
            }
        }
        next.validate().map_err(|mut e| {
            // Blame a rate the caller actually changed.
            if let Some(changed) = [
                "timeout_rate",
                "lose_rate",
                "fail_after_send_rate",
                "error_rate",
            ]
            .into_iter()
            .find(|rate| patch.contains_key(*rate))
            {
                e.field = changed.to_owned();
            }
            e
        })?;
        Ok(next)
    }
}

fn json_rate(value: &Value) -> Result<f64, ConfigError> {
    value.as_f64().ok_or(ConfigError::Rate).and_then(check_rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_latencies() {
        assert_eq!("fixed:0".parse(), Ok(Latency::Fixed(0.0)));
        assert_eq!("fixed:12.5".parse(), Ok(Latency::Fixed(12.5)));
        assert_eq!(
            "uniform:10-50".parse(),
            Ok(Latency::Uniform {
                min: 10.0,
                max: 50.0
            })
        );
        assert_eq!(
            "normal:100,20".parse(),
            Ok(Latency::Normal {
                mean: 100.0,
                stddev: 20.0
            })
        );
        assert_eq!("exp:30".parse(), Ok(Latency::Exp { mean: 30.0 }));
        assert_eq!(" EXP:30 ".parse(), Ok(Latency::Exp { mean: 30.0 }));
    }

    #[test]
    fn rejects_bad_latencies() {
        for bad in [
            "",
            "fixed",
            "fixed:",
            "fixed:-1",
            "fixed:abc",
            "fixed:NaN",
            "fixed:inf",
            "fixed:3600001",
            "uniform:50-10",
            "uniform:10",
            "normal:10",
            "normal:10,-1",
            "gamma:1",
            "exp:x",
        ] {
            assert!(
                bad.parse::<Latency>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn latency_round_trips_through_display() {
        for s in [
            "fixed:0",
            "fixed:12.5",
            "uniform:10-50",
            "normal:100,20",
            "exp:30",
        ] {
            let l: Latency = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
        }
    }

    #[test]
    fn parses_rate_limits() {
        let rl = |limit, window_ms| Some(RateLimit { limit, window_ms });
        assert_eq!(parse_rate_limit("100/1s"), Ok(rl(100, 1_000)));
        assert_eq!(parse_rate_limit("50/s"), Ok(rl(50, 1_000)));
        assert_eq!(parse_rate_limit("10000/1h"), Ok(rl(10_000, 3_600_000)));
        assert_eq!(parse_rate_limit("500/100ms"), Ok(rl(500, 100)));
        assert_eq!(parse_rate_limit("5/2m"), Ok(rl(5, 120_000)));
        assert_eq!(parse_rate_limit("none"), Ok(None));
        assert_eq!(parse_rate_limit(""), Ok(None));
        for bad in [
            "100",
            "0/1s",
            "-1/1s",
            "x/1s",
            "100/",
            "100/0s",
            "100/1d",
            "100/1.5s",
            "100/25h",
            "10000001/1s",
        ] {
            assert_eq!(
                parse_rate_limit(bad),
                Err(ConfigError::RateLimit),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rate_limit_display_uses_largest_whole_unit() {
        for (s, shown) in [
            ("100/1s", "100/1s"),
            ("100/1000ms", "100/1s"),
            ("100/60s", "100/1m"),
            ("10000/1h", "10000/1h"),
            ("500/100ms", "500/100ms"),
            ("5/1500ms", "5/1500ms"),
        ] {
            assert_eq!(s.parse::<RateLimit>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn parses_scalars() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert_eq!(parse_rate("1.0"), Ok(1.0));
        assert_eq!(parse_rate("1.01"), Err(ConfigError::Rate));
        assert_eq!(parse_rate("-0.1"), Err(ConfigError::Rate));
        assert_eq!(parse_rate("NaN"), Err(ConfigError::Rate));
        assert_eq!(parse_hold_ms("60000"), Ok(60_000));
        assert_eq!(parse_hold_ms("3600001"), Err(ConfigError::HoldMs));
        assert_eq!(parse_fail_first("3"), Ok(3));
        assert_eq!(parse_fail_first("-3"), Err(ConfigError::FailFirst));
        assert_eq!(parse_fail_status("503"), Ok(503));
        assert_eq!(parse_fail_status("200"), Err(ConfigError::FailStatus));
        assert_eq!(parse_fail_status("600"), Err(ConfigError::FailStatus));
    }

    #[test]
    fn parses_reject_prefix() {
        assert_eq!(parse_reject_prefix("+1999"), Ok(Some("+1999".to_owned())));
        assert_eq!(parse_reject_prefix("none"), Ok(None));
        assert_eq!(parse_reject_prefix("1999"), Err(ConfigError::RejectPrefix));
        assert_eq!(parse_reject_prefix("+19a"), Err(ConfigError::RejectPrefix));
    }

    #[test]
    fn validate_rejects_rates_above_one_in_total() {
        let cfg = BehaviourConfig {
            error_rate: 0.6,
            timeout_rate: 0.5,
            ..Default::default()
        };
        assert_eq!(cfg.validate().unwrap_err().error, ConfigError::RateSum);
        let cfg = BehaviourConfig {
            error_rate: 0.5,
            timeout_rate: 0.5,
            ..Default::default()
        };
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn serializes_in_cli_form() {
        let cfg = BehaviourConfig {
            latency: "uniform:5-10".parse().unwrap(),
            rate_limit: parse_rate_limit("100/1s").unwrap(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&cfg).unwrap(),
            json!({
                "latency": "uniform:5-10",
                "error_rate": 0.0,
                "timeout_rate": 0.0,
                "timeout_hold_ms": 60000,
                "lose_rate": 0.0,
                "fail_after_send_rate": 0.0,
                "outage": false,
                "rate_limit": "100/1s",
                "fail_first": 0,
                "fail_status": 500,
                "reject_prefix": null,
                "opted_out_prefix": null,
                "honour_idempotency_keys": false,
                "receipt_delay": "fixed:50",
                "receipt_shuffle": false,
                "receipt_duplicate_rate": 0.0,
                "receipt_early_rate": 0.0,
                "delivery_failure_rate": 0.0,
                "read_rate": 0.0,
                "call_duration_ms": 1000,
                "whatsapp_webhook_url": null,
                "whatsapp_app_secret": "simulator-app-secret",
                "webhook_secret": "simulator-webhook-secret",
                "revoked_credential": null,
                "twilio_auth_token": null,
                "redirect_to": null,
                "see_other": false
            })
        );
        // Credentials the provider checks are never shown.
        let set = BehaviourConfig {
            revoked_credential: Some("t0k3n".into()),
            twilio_auth_token: Some("s3cr3t".into()),
            ..Default::default()
        };
        let shown = serde_json::to_value(&set).unwrap();
        assert_eq!(shown["revoked_credential"], "<set>");
        assert_eq!(shown["twilio_auth_token"], "<set>");
    }

    fn patch(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn patch_updates_only_given_fields() {
        let cfg = BehaviourConfig {
            rate_limit: parse_rate_limit("10/1s").unwrap(),
            reject_prefix: Some("+1999".to_owned()),
            ..Default::default()
        };
        let next = cfg
            .patched(&patch(json!({
                "latency": "exp:5",
                "error_rate": 0.1,
                "fail_first": 3,
                "fail_status": 503,
                "reject_prefix": null,
                "opted_out_prefix": "+1998"
            })))
            .unwrap();
        assert_eq!(next.opted_out_prefix.as_deref(), Some("+1998"));
        assert_eq!(next.latency, Latency::Exp { mean: 5.0 });
        assert_eq!(next.error_rate, 0.1);
        assert_eq!(next.fail_first, 3);
        assert_eq!(next.fail_status, 503);
        assert_eq!(next.reject_prefix, None);
        // untouched
        assert_eq!(next.rate_limit, cfg.rate_limit);
        assert_eq!(next.timeout_hold_ms, 60_000);
        // clearing the rate limit with null
        let next = next.patched(&patch(json!({"rate_limit": null}))).unwrap();
        assert_eq!(next.rate_limit, None);
    }

    #[test]
    fn patch_reports_the_offending_field() {
        let cfg = BehaviourConfig::default();
        let err = |v| cfg.patched(&patch(v)).unwrap_err();
        assert_eq!(err(json!({"error_rate": 2})).field, "error_rate");
        assert_eq!(err(json!({"error_rate": "0.1"})).field, "error_rate");
        assert_eq!(err(json!({"latency": 5})).field, "latency");
        assert_eq!(err(json!({"latency": "slow"})).field, "latency");
        assert_eq!(err(json!({"rate_limit": "fast"})).field, "rate_limit");
        assert_eq!(err(json!({"fail_status": 200})).field, "fail_status");
        assert_eq!(err(json!({"fail_first": -1})).field, "fail_first");
        assert_eq!(
            err(json!({"timeout_hold_ms": 1.5})).field,
            "timeout_hold_ms"
        );
        assert_eq!(err(json!({"reject_prefix": 1999})).field, "reject_prefix");
        let e = err(json!({"colour": "blue"}));
        assert_eq!(
            (e.field.as_str(), e.error),
            ("colour", ConfigError::UnknownField)
        );
        let e = err(json!({"error_rate": 0.7, "timeout_rate": 0.7}));
        assert_eq!(
            (e.field.as_str(), e.error),
            ("timeout_rate", ConfigError::RateSum)
        );
        let cfg = BehaviourConfig {
            timeout_rate: 0.7,
            ..Default::default()
        };
        let e = cfg.patched(&patch(json!({"error_rate": 0.7}))).unwrap_err();
        assert_eq!(e.field, "error_rate");
    }
}
