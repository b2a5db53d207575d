//! What a provider row means: its kind (which API it speaks), its non-secret `settings` and
//! its secret `credentials`, parsed into a typed configuration per kind.
//!
//! One definition for every reader: the admin validates a new provider with [`parse`] (and
//! turns each [`Problem`] into a field error), the worker parses the stored row with it
//! before building requests. Problems name the offending field and never quote a
//! credential's value.

use serde_json::{Map, Value};
use std::fmt;

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A generic HTTP JSON API (`POST endpoint`), Herald's original provider shape.
    Http,
    /// Twilio Programmable Messaging (`…/Messages.json`).
    TwilioSms,
    /// Twilio Voice (`…/Calls.json`).
    TwilioVoice,
    /// Meta's WhatsApp Cloud API (`/{version}/{phone_number_id}/messages`).
    WhatsApp,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Http,
        Kind::TwilioSms,
        Kind::TwilioVoice,
        Kind::WhatsApp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::TwilioSms => "twilio_sms",
            Kind::TwilioVoice => "twilio_voice",
            Kind::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The real API's base URL, used when a provider names no endpoint. A generic provider
    /// has none: its endpoint is the whole URL and is required.
    pub fn default_endpoint(self) -> Option<&'static str> {
        match self {
            Kind::Http => None,
            Kind::TwilioSms | Kind::TwilioVoice => Some(TWILIO_API),
            Kind::WhatsApp => Some(GRAPH_API),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const TWILIO_API: &str = "https://api.twilio.com";
pub const GRAPH_API: &str = "https://graph.facebook.com";
/// The Graph API version used when the settings name none.
pub const DEFAULT_GRAPH_VERSION: &str = "v21.0";

/// The variables a generic provider's body template may use.
pub const BODY_TEMPLATE_VARIABLES: [&str; 8] = [
    "to",
    "body",
    "channel",
    "idempotency_key",
    "recipient_id",
    "campaign_id",
    "tenant_id",
    "callback_url",
];

/// A secret string: usable, but never printed by `Debug` or `Display`, and wiped from
/// memory when dropped (`secrecy`).
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

// Configurations are compared (a provider's cached settings against a fresh read).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A provider's parsed configuration, one variant per [`Kind`].
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    Http(HttpConfig),
    TwilioSms(TwilioSmsConfig),
    TwilioVoice(TwilioVoiceConfig),
    WhatsApp(WhatsAppConfig),
}

impl ProviderConfig {
    pub fn kind(&self) -> Kind {
        match self {
            ProviderConfig::Http(_) => Kind::Http,
            ProviderConfig::TwilioSms(_) => Kind::TwilioSms,
            ProviderConfig::TwilioVoice(_) => Kind::TwilioVoice,
            ProviderConfig::WhatsApp(_) => Kind::WhatsApp,
        }
    }

    /// Every secret value, so that text from elsewhere (a provider's error body) can be
    /// scrubbed of them before it is logged or stored.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            ProviderConfig::Http(c) => c
                .bearer_token
                .iter()
                .chain(&c.webhook_secret)
                .map(Secret::expose)
                .chain(c.secret_headers.iter().map(|(_, v)| v.expose()))
                .collect(),
            ProviderConfig::TwilioSms(c) => vec![c.account.auth_token.expose()],
            ProviderConfig::TwilioVoice(c) => vec![c.account.auth_token.expose()],
            ProviderConfig::WhatsApp(c) => [&c.access_token]
                .into_iter()
                .chain(&c.app_secret)
                .chain(&c.verify_token)
                .map(Secret::expose)
                .collect(),
        }
    }

    /// How this provider's receipts are signed, if Herald can check them.
    pub fn receipts(&self) -> Option<ReceiptKey<'_>> {
        match self {
            ProviderConfig::Http(c) => c.webhook_secret.as_ref().map(ReceiptKey::Herald),
            ProviderConfig::TwilioSms(c) => Some(ReceiptKey::Twilio(&c.account.auth_token)),
            ProviderConfig::TwilioVoice(c) => Some(ReceiptKey::Twilio(&c.account.auth_token)),
            ProviderConfig::WhatsApp(c) => {
                c.app_secret.as_ref().map(|app_secret| ReceiptKey::Meta {
                    app_secret,
                    verify_token: c.verify_token.as_ref(),
                })
            }
        }
    }
}

/// The secret a provider's receipts are signed with (see `herald_shared::signature`).
#[derive(Debug, Clone, Copy)]
pub enum ReceiptKey<'a> {
    /// `X-Twilio-Signature`, keyed with the account's auth token.
    Twilio(&'a Secret),
    /// `X-Hub-Signature-256`, keyed with the Meta app's secret; the verify token answers
    /// Meta's subscription check.
    Meta {
        app_secret: &'a Secret,
        verify_token: Option<&'a Secret>,
    },
    /// `X-Herald-Signature`, keyed with the generic provider's webhook secret.
    Herald(&'a Secret),
}

/// `kind = "http"`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The whole URL requests are POSTed to.
    pub endpoint: String,
    /// A JSON document whose strings may hold `{{variable}}`s ([`BODY_TEMPLATE_VARIABLES`]);
    /// `None` sends Herald's default body.
    pub body_template: Option<Value>,
    /// Non-secret extra headers (`settings.headers`).
    pub headers: Vec<(String, String)>,
    /// Secret extra headers (`credentials.headers`), e.g. an API key header.
    pub secret_headers: Vec<(String, Secret)>,
    /// `credentials.bearer_token`, sent as `Authorization: Bearer …`.
    pub bearer_token: Option<Secret>,
    /// `credentials.webhook_secret`: signs the provider's receipts (`X-Herald-Signature`).
    pub webhook_secret: Option<Secret>,
}

/// A Twilio account: where the API is and how to authenticate.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioAccount {
    /// Without a trailing slash, e.g. `https://api.twilio.com`.
    pub base_url: String,
    /// `AC…`; also the Basic auth user name.
    pub account_sid: String,
    pub auth_token: Secret,
}

/// `kind = "twilio_sms"`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioSmsConfig {
    pub account: TwilioAccount,
    /// At least one of `from` and `messaging_service_sid` is set.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub status_callback: Option<String>,
}

/// `kind = "twilio_voice"`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioVoiceConfig {
    pub account: TwilioAccount,
    pub from: String,
    /// `Some`: Twilio fetches TwiML from this URL. `None`: the message body is spoken
    /// through inline TwiML (`<Response><Say>…</Say></Response>`).
    pub url: Option<String>,
    pub status_callback: Option<String>,
}

/// `kind = "whatsapp"`.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsAppConfig {
    /// Without a trailing slash, e.g. `https://graph.facebook.com`.
    pub base_url: String,
    /// `v21.0`.
    pub api_version: String,
    pub phone_number_id: String,
    pub access_token: Secret,
    pub message: WhatsAppMessage,
    /// `credentials.app_secret`: the Meta app's secret, which signs its webhooks.
    pub app_secret: Option<Secret>,
    /// `credentials.verify_token`: answers Meta's webhook subscription check.
    pub verify_token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WhatsAppMessage {
    /// A free-form text message (only inside the 24-hour customer service window).
    Text { preview_url: bool },
    /// An approved template; with `body_parameter` the rendered body is its single body
    /// parameter (`{{1}}`), otherwise the template is sent without parameters.
    Template {
        name: String,
        language: String,
        body_parameter: bool,
    },
}

/// One thing wrong with a provider's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `kind`, `endpoint`, `settings.from`, `credentials.auth_token`, …
    pub field: String,
    pub reason: String,
}

/// Everything wrong with a provider's configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(|p| format!("{}: {}", p.field, p.reason)).collect::<Vec<_>>().join("; "))]
pub struct Problems(pub Vec<Problem>);

/// Parses and validates a provider row. `settings` and `credentials` are the stored JSON
/// objects; `endpoint` is the generic provider's URL or the other kinds' API base URL.
pub fn parse(
    kind: &str,
    endpoint: &str,
    settings: &Value,
    credentials: &Value,
) -> Result<ProviderConfig, Problems> {
    let mut p = Checker::default();
    let Some(kind) = Kind::parse(kind) else {
        let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        p.bad(
            "kind",
            format!(
                "unknown provider kind `{kind}`; known: {}",
                known.join(", ")
            ),
        );
        return Err(Problems(p.problems));
    };
    let empty = Map::new();
    let settings = p.object("settings", settings).unwrap_or(&empty);
    let credentials = p.object("credentials", credentials).unwrap_or(&empty);
    let base_url = p
        .url("endpoint", endpoint)
        .map(|u| u.trim_end_matches('/').to_owned());
    let config = match kind {
        Kind::Http => http(&mut p, endpoint, settings, credentials),
        Kind::TwilioSms => {
            p.only(
                "settings",
                settings,
                &["from", "messaging_service_sid", "status_callback"],
            );
            let account = twilio_account(&mut p, base_url.as_deref(), credentials);
            let from = p.text("settings.from", settings.get("from"), 64);
            let service = p.sid(
                "settings.messaging_service_sid",
                settings.get("messaging_service_sid"),
                "MG",
            );
            if from.is_none()
                && service.is_none()
                && !p.has("settings.from")
                && !p.has("settings.messaging_service_sid")
            {
                p.bad(
                    "settings.from",
                    "`from` or `messaging_service_sid` is required".into(),
                );
            }
            let status_callback = p.opt_url("settings.status_callback", settings);
            account.map(|account| {
                ProviderConfig::TwilioSms(TwilioSmsConfig {
                    account,
                    from,
                    messaging_service_sid: service,
                    status_callback,
                })
            })
        }
        Kind::TwilioVoice => {
            p.only("settings", settings, &["from", "url", "status_callback"]);
            let account = twilio_account(&mut p, base_url.as_deref(), credentials);
            let from = p.required_text("settings.from", settings.get("from"), 64);
            let url = p.opt_url("settings.url", settings);
            let status_callback = p.opt_url("settings.status_callback", settings);
            account.zip(from).map(|(account, from)| {
                ProviderConfig::TwilioVoice(TwilioVoiceConfig {
                    account,
                    from,
                    url,
                    status_callback,
                })
            })
        }
        Kind::WhatsApp => whatsapp(&mut p, base_url.as_deref(), settings, credentials),
    };
    match config {
        Some(config) if p.problems.is_empty() => Ok(config),
        _ => {
            if p.problems.is_empty() {
                p.bad("settings", "invalid".into());
            }
            Err(Problems(p.problems))
        }
    }
}

fn http(
    p: &mut Checker,
    endpoint: &str,
    settings: &Map<String, Value>,
    credentials: &Map<String, Value>,
) -> Option<ProviderConfig> {
    p.only("settings", settings, &["body_template", "headers"]);
    // Generic credentials were free-form before kinds existed: unknown keys are ignored so
    // that older rows keep working.
    let bearer_token = match credentials.get("bearer_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && header_value_ok(s) => Some(Secret::new(s)),
        Some(_) => {
            p.bad(
                "credentials.bearer_token",
                "must be a non-empty string of visible ASCII".into(),
            );
            None
        }
    };
    let headers = p.headers("settings.headers", settings.get("headers"), false);
    let secret_headers = p.headers("credentials.headers", credentials.get("headers"), true);
    let has_authorization = |h: &[(String, String)]| {
        h.iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    };
    if bearer_token.is_some() && has_authorization(&secret_headers) {
        p.bad(
            "credentials.headers",
            "an Authorization header and a bearer_token cannot both be set".into(),
        );
    }
    let body_template = match settings.get("body_template") {
        None | Some(Value::Null) => None,
        Some(template @ (Value::Object(_) | Value::Array(_))) => {
            p.body_template("settings.body_template", template);
            Some(template.clone())
        }
        Some(_) => {
            p.bad(
                "settings.body_template",
                "must be a JSON object or array".into(),
            );
            None
        }
    };
    let webhook_secret = p.opt_secret(
        "credentials.webhook_secret",
        credentials.get("webhook_secret"),
    );
    Some(ProviderConfig::Http(HttpConfig {
        endpoint: endpoint.to_owned(),
        body_template,
        headers,
        secret_headers: secret_headers
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect(),
        bearer_token,
        webhook_secret,
    }))
}

fn twilio_account(
    p: &mut Checker,
    base_url: Option<&str>,
    credentials: &Map<String, Value>,
) -> Option<TwilioAccount> {
    p.only("credentials", credentials, &["account_sid", "auth_token"]);
    let account_sid = p.sid(
        "credentials.account_sid",
        credentials.get("account_sid"),
        "AC",
    );
    if account_sid.is_none() && !p.has("credentials.account_sid") {
        p.bad("credentials.account_sid", "required".into());
    }
    let auth_token = p.secret("credentials.auth_token", credentials.get("auth_token"));
    Some(TwilioAccount {
        base_url: base_url?.to_owned(),
        account_sid: account_sid?,
        auth_token: auth_token?,
    })
}

fn whatsapp(
    p: &mut Checker,
    base_url: Option<&str>,
    settings: &Map<String, Value>,
    credentials: &Map<String, Value>,
) -> Option<ProviderConfig> {
    p.only(
        "settings",
        settings,
        &["phone_number_id", "api_version", "template", "preview_url"],
    );
    p.only(
        "credentials",
        credentials,
        &["access_token", "app_secret", "verify_token"],
    );
    let phone_number_id = match settings.get("phone_number_id") {
        Some(Value::String(id))
            if (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(id.clone())
        }
        None | Some(Value::Null) => {
            p.bad("settings.phone_number_id", "required".into());
            None
        }
        Some(_) => {
            p.bad(
                "settings.phone_number_id",
                "must be a string of 1 to 32 digits".into(),
            );
            None
        }
    };
    let api_version = match settings.get("api_version") {
        None | Some(Value::Null) => Some(DEFAULT_GRAPH_VERSION.to_owned()),
        Some(Value::String(v)) if graph_version_ok(v) => Some(v.clone()),
        Some(_) => {
            p.bad(
                "settings.api_version",
                "must look like v21.0 (v, digits, optionally . and digits)".into(),
            );
            None
        }
    };
    let preview_url = match settings.get("preview_url") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            p.bad("settings.preview_url", "must be true or false".into());
            false
        }
    };
    let message = match settings.get("template") {
        None | Some(Value::Null) => Some(WhatsAppMessage::Text { preview_url }),
        Some(Value::Object(t)) => {
            p.only(
                "settings.template",
                t,
                &["name", "language", "body_parameter"],
            );
            let name = p.required_text("settings.template.name", t.get("name"), 512);
            let language = p.required_text("settings.template.language", t.get("language"), 16);
            let body_parameter = match t.get("body_parameter") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    p.bad(
                        "settings.template.body_parameter",
                        "must be true or false".into(),
                    );
                    true
                }
            };
            name.zip(language)
                .map(|(name, language)| WhatsAppMessage::Template {
                    name,
                    language,
                    body_parameter,
                })
        }
        Some(_) => {
            p.bad(
                "settings.template",
                "must be an object {\"name\", \"language\", \"body_parameter\"?}".into(),
            );
            None
        }
    };
    let access_token = p.secret("credentials.access_token", credentials.get("access_token"));
    let app_secret = p.opt_secret("credentials.app_secret", credentials.get("app_secret"));
    let verify_token = p.opt_secret("credentials.verify_token", credentials.get("verify_token"));
    Some(ProviderConfig::WhatsApp(WhatsAppConfig {
        base_url: base_url?.to_owned(),
        api_version: api_version?,
        phone_number_id: phone_number_id?,
        access_token: access_token?,
        message: message?,
        app_secret,
        verify_token,
    }))
}

fn graph_version_ok(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let mut parts = rest.splitn(2, '.');
    let digits = |s: Option<&str>| {
        s.is_some_and(|s| (1..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let major = parts.next();
    let minor = parts.next();
    digits(major) && (minor.is_none() || digits(minor))
}

/// RFC 9110 token characters, the only ones allowed in a header name.
fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII and inner spaces: what every HTTP stack accepts in a header value.
fn header_value_ok(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b)) && value.trim() == value
}

/// Headers Herald sets itself (or the HTTP stack does) and settings may not replace.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "host",
    "idempotency-key",
    "transfer-encoding",
];

/// Collects problems while the configuration is read.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn bad(&mut self, field: &str, reason: String) {
        self.problems.push(Problem {
            field: field.to_owned(),
            reason,
        });
    }

    /// Whether a problem was already noted for a field starting with `prefix`.
    fn has(&self, prefix: &str) -> bool {
        self.problems.iter().any(|p| p.field.starts_with(prefix))
    }

    fn object<'a>(&mut self, field: &str, value: &'a Value) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            _ => {
                self.bad(field, "must be a JSON object".into());
                None
            }
        }
    }

    /// Typos are errors rather than silently ignored settings.
    fn only(&mut self, field: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.bad(
                    &format!("{field}.{key}"),
                    format!("unknown; known: {}", known.join(", ")),
                );
            }
        }
    }

    fn url(&mut self, field: &str, value: &str) -> Option<String> {
        let ok = (value.starts_with("http://") || value.starts_with("https://"))
            && value.len() > "https://".len()
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Some(value.to_owned())
        } else {
            self.bad(field, "must be an http:// or https:// URL".into());
            None
        }
    }

    fn opt_url(&mut self, field: &str, map: &Map<String, Value>) -> Option<String> {
        let key = field.rsplit('.').next().unwrap_or(field);
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => self.url(field, s),
            Some(_) => {
                self.bad(field, "must be an http:// or https:// URL".into());
                None
            }
        }
    }

    /// An optional non-secret string of at most `max` characters without control characters.
    fn text(&mut self, field: &str, value: Option<&Value>, max: usize) -> Option<String> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if !s.trim().is_empty()
                    && s.chars().count() <= max
                    && !s.chars().any(char::is_control) =>
            {
                Some(s.clone())
            }
            Some(_) => {
                self.bad(
                    field,
                    format!("must be a non-empty string of at most {max} characters"),
                );
                None
            }
        }
    }

    fn required_text(&mut self, field: &str, value: Option<&Value>, max: usize) -> Option<String> {
        let text = self.text(field, value, max);
        if text.is_none() && value.is_none_or(Value::is_null) {
            self.bad(field, "required".into());
        }
        text
    }

    /// A Twilio SID: `prefix` then 32 letters or digits. It goes into URL paths, so nothing
    /// else is allowed.
    fn sid(&mut self, field: &str, value: Option<&Value>, prefix: &str) -> Option<String> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if s.len() == 34
                    && s.starts_with(prefix)
                    && s.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Some(s.clone())
            }
            Some(_) => {
                self.bad(
                    field,
                    format!("must be {prefix} followed by 32 letters or digits"),
                );
                None
            }
        }
    }

    /// A required secret. The reason never quotes the value.
    fn secret(&mut self, field: &str, value: Option<&Value>) -> Option<Secret> {
        match value {
            Some(Value::String(s)) if !s.is_empty() && header_value_ok(s) => {
                Some(Secret::new(s.clone()))
            }
            None | Some(Value::Null) => {
                self.bad(field, "required".into());
                None
            }
            Some(_) => {
                self.bad(field, "must be a non-empty string of visible ASCII".into());
                None
            }
        }
    }

    /// An optional secret: absent or null is `None`.
    fn opt_secret(&mut self, field: &str, value: Option<&Value>) -> Option<Secret> {
        match value {
            None | Some(Value::Null) => None,
            value => self.secret(field, value),
        }
    }

    /// `{"Name": "value", …}`. Settings may not carry an Authorization header: a secret
    /// belongs in the write-only credentials.
    fn headers(
        &mut self,
        field: &str,
        value: Option<&Value>,
        secret: bool,
    ) -> Vec<(String, String)> {
        let map = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                self.bad(field, "must be an object of header names to values".into());
                return Vec::new();
            }
        };
        let mut headers = Vec::with_capacity(map.len());
        for (name, value) in map {
            let here = format!("{field}.{name}");
            let lower = name.to_ascii_lowercase();
            if !header_name_ok(name) {
                self.bad(&here, "not a valid header name".into());
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                self.bad(&here, "set by Herald; cannot be overridden".into());
            } else if !secret && lower == "authorization" {
                self.bad(
                    &here,
                    "secrets belong in credentials.headers, which are write-only".into(),
                );
            } else {
                match value {
                    Value::String(v) if header_value_ok(v) => {
                        headers.push((name.clone(), v.clone()));
                    }
                    _ => self.bad(
                        &here,
                        "must be a string of visible ASCII without surrounding spaces".into(),
                    ),
                }
            }
        }
        headers
    }

    /// Every string in the template must be a valid template over the known variables.
    fn body_template(&mut self, field: &str, template: &Value) {
        match template {
            Value::String(s) => match crate::template::variables(s) {
                Ok(names) => {
                    for name in names {
                        if !BODY_TEMPLATE_VARIABLES.contains(&name.as_str()) {
                            self.bad(
                                field,
                                format!(
                                    "unknown variable `{name}`; known: {}",
                                    BODY_TEMPLATE_VARIABLES.join(", ")
                                ),
                            );
                        }
                    }
                }
                Err(e) => self.bad(field, e.to_string()),
            },
            Value::Array(items) => {
                for item in items {
                    self.body_template(field, item);
                }
            }
            Value::Object(map) => {
                for item in map.values() {
                    self.body_template(field, item);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn fields(result: Result<ProviderConfig, Problems>) -> Vec<String> {
        result.unwrap_err().0.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_plain_http_provider_still_parses() {
        let config = parse(
            "http",
            "https://sms.example/send",
            &json!({}),
            &json!({"bearer_token": "tok", "legacy": 1}),
        )
        .unwrap();
        let ProviderConfig::Http(http) = config else {
            panic!("not http")
        };
        assert_eq!(http.endpoint, "https://sms.example/send");
        assert_eq!(http.bearer_token, Some(Secret::new("tok")));
        assert!(http.body_template.is_none());
    }

    #[test]
    fn http_templates_and_headers_are_checked() {
        let bad = parse(
            "http",
            "https://x.example",
            &json!({"body_template": {"a": "{{nope}}", "b": ["{{to"]},
                    "headers": {"Authorization": "x", "Content-Type": "y", "bad name": "z", "X-Ok": "v"},
                    "other": 1}),
            &json!({"bearer_token": "t", "headers": {"authorization": "Basic x"}}),
        );
        let mut got = fields(bad);
        got.sort();
        assert_eq!(
            got,
            [
                "credentials.headers",
                "settings.body_template",
                "settings.body_template",
                "settings.headers.Authorization",
                "settings.headers.Content-Type",
                "settings.headers.bad name",
                "settings.other",
            ]
        );
    }

    #[test]
    fn twilio_sms_needs_an_account_and_a_sender() {
        let ok = parse(
            "twilio_sms",
            "https://api.twilio.com/",
            &json!({"messaging_service_sid": MG, "status_callback": "https://cb.example/t"}),
            &json!({"account_sid": SID, "auth_token": "secret"}),
        )
        .unwrap();
        let ProviderConfig::TwilioSms(c) = ok else {
            panic!("not twilio")
        };
        assert_eq!(c.account.base_url, "https://api.twilio.com");
        assert_eq!(c.messaging_service_sid.as_deref(), Some(MG));
        assert_eq!(c.from, None);

        let mut got = fields(parse(
            "twilio_sms",
            TWILIO_API,
            &json!({}),
            &json!({"account_sid": "AC/../x"}),
        ));
        got.sort();
        assert_eq!(
            got,
            [
                "credentials.account_sid",
                "credentials.auth_token",
                "settings.from"
            ]
        );
    }

    #[test]
    fn problems_never_quote_secrets() {
        let err = parse(
            "whatsapp",
            GRAPH_API,
            &json!({"phone_number_id": "123"}),
            &json!({"access_token": "s3cr3t\n"}),
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            [Problem {
                field: "credentials.access_token".into(),
                reason: "must be a non-empty string of visible ASCII".into()
            }]
        );
        assert!(!err.to_string().contains("s3cr3t"));
        assert_eq!(format!("{:?}", Secret::new("s3cr3t")), "<redacted>");
    }

    #[test]
    fn twilio_voice_and_whatsapp() {
        let voice = parse(
            "twilio_voice",
            TWILIO_API,
            &json!({"from": "+15005550006"}),
            &json!({"account_sid": SID, "auth_token": "t"}),
        )
        .unwrap();
        assert_eq!(voice.kind(), Kind::TwilioVoice);
        assert_eq!(
            fields(parse(
                "twilio_voice",
                TWILIO_API,
                &json!({"url": "ftp://x"}),
                &json!({"account_sid": SID, "auth_token": "t"}),
            )),
            ["settings.from", "settings.url"]
        );

        let wa = parse(
            "whatsapp",
            "http://127.0.0.1:9",
            &json!({"phone_number_id": "1055", "template": {"name": "promo", "language": "en_US"}}),
            &json!({"access_token": "EAAG"}),
        )
        .unwrap();
        let ProviderConfig::WhatsApp(wa) = wa else {
            panic!("not whatsapp")
        };
        assert_eq!(wa.api_version, DEFAULT_GRAPH_VERSION);
        assert_eq!(
            wa.message,
            WhatsAppMessage::Template {
                name: "promo".into(),
                language: "en_US".into(),
                body_parameter: true
            }
        );
        let mut got = fields(parse(
            "whatsapp",
            GRAPH_API,
            &json!({"api_version": "21", "phone_number_id": "12a"}),
            &json!({}),
        ));
        got.sort();
        assert_eq!(
            got,
            [
                "credentials.access_token",
                "settings.api_version",
                "settings.phone_number_id"
            ]
        );
    }

    #[test]
    fn unknown_kinds_are_named() {
        let err = parse("smtp", "https://x.example", &json!({}), &json!({})).unwrap_err();
        assert_eq!(err.0[0].field, "kind");
        assert!(err.0[0].reason.contains("twilio_sms"));
        assert_eq!(Kind::parse("whatsapp"), Some(Kind::WhatsApp));
        assert_eq!(Kind::WhatsApp.default_endpoint(), Some(GRAPH_API));
        assert_eq!(Kind::Http.default_endpoint(), None);
    }
}
