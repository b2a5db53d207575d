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

    /// Whether this kind of provider can carry `channel`'s messages; the reason if not. The
    /// request is built from the kind alone: a Twilio Voice provider places a call whatever
    /// the channel, a WhatsApp Cloud API one sends a WhatsApp message, and Twilio
    /// Messaging texts (SMS, or WhatsApp and chat through Twilio's address prefixes). A
    /// voice campaign through a messaging provider would text its script, and hold a line
    /// for each text as if it were a call.
    pub fn serves(self, channel: crate::domain::Channel) -> Result<(), String> {
        use crate::domain::Channel;
        let fits = match self {
            Kind::Http => true,
            Kind::TwilioVoice => channel == Channel::Voice,
            Kind::WhatsApp => channel == Channel::Whatsapp,
            Kind::TwilioSms => channel != Channel::Voice,
        };
        if fits {
            return Ok(());
        }
        Err(match self {
            Kind::TwilioVoice => {
                "is a twilio_voice provider, which places calls: only for channel voice".into()
            }
            Kind::WhatsApp => {
                "is a whatsapp provider, which sends WhatsApp messages: only for channel whatsapp"
                    .into()
            }
            _ => format!(
                "is a {} provider, which sends texts: not for channel {}",
                self.as_str(),
                channel.as_str()
            ),
        })
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
/// The Graph API version used when the settings name none: Meta's: v24.0 (October 2025), available until about October 2027 (Meta
/// keeps a version two years). Providers may name another in `settings.api_version`.
pub const DEFAULT_GRAPH_VERSION: &str = "v24.0";

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
            ProviderConfig::TwilioSms(c) => c.account.secrets(),
            ProviderConfig::TwilioVoice(c) => c.account.secrets(),
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
            ProviderConfig::TwilioSms(c) => c.account.auth_token.as_ref().map(ReceiptKey::Twilio),
            ProviderConfig::TwilioVoice(c) => c.account.auth_token.as_ref().map(ReceiptKey::Twilio),
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
    /// `AC…`: in every request's path.
    pub account_sid: String,
    /// The account's auth token. It authenticates requests when no API key is given, and it
    /// is what Twilio signs its callbacks with whatever authenticated the request: without
    /// it, no receipts are asked for.
    pub auth_token: Option<Secret>,
    /// An API key (`SK…` and its secret), which Twilio recommends over the auth token for
    /// requests: it can be revoked on its own.
    pub api_key: Option<TwilioApiKey>,
}

/// `credentials.api_key_sid` and `credentials.api_key_secret`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioApiKey {
    pub sid: String,
    pub secret: Secret,
}

impl TwilioAccount {
    /// HTTP Basic's user and password: the API key if there is one, else the account and
    /// its auth token (one of the two is always there: the parser requires it).
    pub fn basic_auth(&self) -> (&str, &str) {
        match (&self.api_key, &self.auth_token) {
            (Some(key), _) => (&key.sid, key.secret.expose()),
            (None, Some(token)) => (&self.account_sid, token.expose()),
            (None, None) => (&self.account_sid, ""),
        }
    }

    fn secrets(&self) -> Vec<&str> {
        self.auth_token
            .iter()
            .chain(self.api_key.as_ref().map(|k| &k.secret))
            .map(Secret::expose)
            .collect()
    }
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
    /// `v24.0`.
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
    /// An approved template and what fills its variables.
    Template(WhatsAppTemplate),
}

/// An approved template (`settings.template`). Each parameter is a Herald template
/// (`{{order_id}}`, `Dear {{first_name}}`) rendered with the recipient's variables at send
/// time, in Meta's order: `{{1}}`, `{{2}}`, … of its component.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsAppTemplate {
    pub name: String,
    pub language: String,
    /// The header's text parameter, if the header has one.
    pub header: Vec<String>,
    /// The body's parameters. Without any, `body_parameter` makes the campaign's rendered
    /// message the single body parameter (`{{1}}`).
    pub body: Vec<String>,
    pub body_parameter: bool,
    pub buttons: Vec<TemplateButton>,
}

/// A button of a template that takes a parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateButton {
    pub kind: ButtonKind,
    /// Its position among the template's buttons, from 0.
    pub index: u8,
    pub parameter: String,
}

/// What a button's parameter is: Meta's `sub_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonKind {
    /// The suffix of a dynamic URL (a `text` parameter).
    Url,
    /// What comes back when it is tapped (a `payload` parameter).
    QuickReply,
    /// A coupon code to copy (a `coupon_code` parameter).
    CopyCode,
}

impl ButtonKind {
    pub fn sub_type(self) -> &'static str {
        match self {
            ButtonKind::Url => "url",
            ButtonKind::QuickReply => "quick_reply",
            ButtonKind::CopyCode => "copy_code",
        }
    }
}

/// Most parameters of one template component Herald takes (Meta's bodies take fewer).
pub const MAX_TEMPLATE_PARAMETERS: usize = 100;

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
    // that older rows keep working (the admin refuses `sealed` among new ones).
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
    p.only(
        "credentials",
        credentials,
        &["account_sid", "auth_token", "api_key_sid", "api_key_secret"],
    );
    let account_sid = p.sid(
        "credentials.account_sid",
        credentials.get("account_sid"),
        "AC",
    );
    if account_sid.is_none() && !p.has("credentials.account_sid") {
        p.bad("credentials.account_sid", "required".into());
    }
    let key_sid = p.sid(
        "credentials.api_key_sid",
        credentials.get("api_key_sid"),
        "SK",
    );
    let key_secret = p.opt_secret(
        "credentials.api_key_secret",
        credentials.get("api_key_secret"),
    );
    let keyed = credentials.get("api_key_sid").is_some_and(|v| !v.is_null());
    let key_secret_given = credentials
        .get("api_key_secret")
        .is_some_and(|v| !v.is_null());
    if keyed && !key_secret_given {
        p.bad(
            "credentials.api_key_secret",
            "required with api_key_sid".into(),
        );
    }
    if key_secret_given && !keyed {
        p.bad(
            "credentials.api_key_sid",
            "required with api_key_secret".into(),
        );
    }
    // Without an API key, the auth token authenticates the requests and is required.
    let auth_token = if keyed || key_secret_given {
        p.opt_secret("credentials.auth_token", credentials.get("auth_token"))
    } else {
        p.secret("credentials.auth_token", credentials.get("auth_token"))
    };
    let api_key = key_sid
        .zip(key_secret)
        .map(|(sid, secret)| TwilioApiKey { sid, secret });
    if (keyed || key_secret_given) && api_key.is_none() {
        return None;
    }
    if !(keyed || key_secret_given) && auth_token.is_none() {
        return None;
    }
    Some(TwilioAccount {
        base_url: base_url?.to_owned(),
        account_sid: account_sid?,
        auth_token,
        api_key,
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
                "must look like v24.0 (v, digits, optionally . and digits)".into(),
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
        Some(Value::Object(t)) => whatsapp_template(p, t).map(WhatsAppMessage::Template),
        Some(_) => {
            p.bad(
                "settings.template",
                "must be an object {\"name\", \"language\", \"header\"?, \"body\"?, \"buttons\"?}"
                    .into(),
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

/// `settings.template`: `{"name", "language", "header"?: [P], "body"?: [P, …],
/// "body_parameter"?: bool, "buttons"?: [{"sub_type": "url" | "quick_reply" | "copy_code",
/// "index": 0–9, "parameter": P}]}`, each `P` a Herald template.
fn whatsapp_template(p: &mut Checker, t: &Map<String, Value>) -> Option<WhatsAppTemplate> {
    p.only(
        "settings.template",
        t,
        &[
            "name",
            "language",
            "header",
            "body",
            "body_parameter",
            "buttons",
        ],
    );
    let name = p.required_text("settings.template.name", t.get("name"), 512);
    let language = p.required_text("settings.template.language", t.get("language"), 16);
    let header = p.parameters("settings.template.header", t.get("header"), 1);
    let body = p.parameters(
        "settings.template.body",
        t.get("body"),
        MAX_TEMPLATE_PARAMETERS,
    );
    let body_parameter = match t.get("body_parameter") {
        // The campaign's message is the body's parameter unless the body lists its own.
        None | Some(Value::Null) => body.as_ref().is_none_or(Vec::is_empty),
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            p.bad(
                "settings.template.body_parameter",
                "must be true or false".into(),
            );
            false
        }
    };
    if body_parameter && body.as_ref().is_some_and(|b| !b.is_empty()) {
        p.bad(
            "settings.template.body_parameter",
            "cannot be true when settings.template.body lists the parameters".into(),
        );
    }
    let buttons = match t.get("buttons") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(list)) if list.len() <= 10 => {
            let buttons: Vec<Option<TemplateButton>> = list
                .iter()
                .enumerate()
                .map(|(i, b)| p.template_button(&format!("settings.template.buttons[{i}]"), b))
                .collect();
            buttons.into_iter().collect()
        }
        Some(_) => {
            p.bad(
                "settings.template.buttons",
                "must be a list of at most 10 buttons".into(),
            );
            None
        }
    };
    Some(WhatsAppTemplate {
        name: name?,
        language: language?,
        header: header?,
        body: body?,
        body_parameter,
        buttons: buttons?,
    })
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
pub const RESERVED_HEADERS: [&str; 5] = [
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

    /// A list of at most `max` template parameters, each a Herald template of at most 1,024
    /// characters (Meta's limit for a text parameter); absent is an empty list.
    fn parameters(
        &mut self,
        field: &str,
        value: Option<&Value>,
        max: usize,
    ) -> Option<Vec<String>> {
        match value {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::Array(list)) if list.len() <= max => list
                .iter()
                .enumerate()
                .map(|(i, v)| self.parameter(&format!("{field}[{i}]"), v))
                .collect::<Vec<_>>()
                .into_iter()
                .collect(),
            Some(_) => {
                self.bad(
                    field,
                    format!("must be a list of at most {max} parameters (strings)"),
                );
                None
            }
        }
    }

    /// One template parameter: a Herald template such as `{{first_name}}`.
    fn parameter(&mut self, field: &str, value: &Value) -> Option<String> {
        let text = self.text(field, Some(value), 1024);
        if value.is_null() {
            self.bad(field, "must be a string".into());
        }
        let text = text?;
        match crate::template::variables(&text) {
            Ok(_) => Some(text),
            Err(e) => {
                self.bad(field, e.to_string());
                None
            }
        }
    }

    fn template_button(&mut self, field: &str, value: &Value) -> Option<TemplateButton> {
        let Value::Object(b) = value else {
            self.bad(
                field,
                "must be an object {\"sub_type\", \"index\", \"parameter\"}".into(),
            );
            return None;
        };
        self.only(field, b, &["sub_type", "index", "parameter"]);
        let kind = match b.get("sub_type").and_then(Value::as_str) {
            Some("url") => Some(ButtonKind::Url),
            Some("quick_reply") => Some(ButtonKind::QuickReply),
            Some("copy_code") => Some(ButtonKind::CopyCode),
            _ => {
                self.bad(
                    &format!("{field}.sub_type"),
                    "must be url, quick_reply or copy_code".into(),
                );
                None
            }
        };
        let index = match b.get("index").and_then(Value::as_u64) {
            Some(i) if i <= 9 => u8::try_from(i).ok(),
            _ => {
                self.bad(
                    &format!("{field}.index"),
                    "must be a whole number from 0 to 9".into(),
                );
                None
            }
        };
        let parameter = match b.get("parameter") {
            Some(v) => self.parameter(&format!("{field}.parameter"), v),
            None => {
                self.bad(&format!("{field}.parameter"), "required".into());
                None
            }
        };
        Some(TemplateButton {
            kind: kind?,
            index: index?,
            parameter: parameter?,
        })
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

/// Whether `from` is a sender Twilio takes, written as Twilio writes it back: the lookup of
/// a lost answer lists messages by `From` and compares exactly, so a number written
/// otherwise (`+1 555 …`, no `+`) would find nothing there and the message be sent again.
/// Messages: E.164 (`+15551234567`), `whatsapp:` and E.164, a short code (3 to 8 digits)
/// or an alphanumeric sender ID (up to 11 of letters, digits, spaces and `+ - _ &`, a
/// letter among them, as Twilio's AlphaSender takes). Calls: E.164, or `client:` and an
/// identity. Checked by the admin when a provider is created, not by [`parse`]: a provider
/// stored before the check must still load in the workers and the receiver.
pub fn twilio_sender(from: &str, voice: bool) -> Result<(), &'static str> {
    let e164 = |n: &str| {
        n.strip_prefix('+').is_some_and(|digits| {
            (2..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        })
    };
    if voice {
        let client = from
            .strip_prefix("client:")
            .is_some_and(|id| !id.is_empty() && !id.contains(char::is_whitespace));
        return if e164(from) || client {
            Ok(())
        } else {
            Err("must be a number in E.164, like +15551234567 (or client:identity)")
        };
    }
    let short_code = (3..=8).contains(&from.len()) && from.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&from.len())
        && from
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" +-_&".contains(&b))
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    let whatsapp = from.strip_prefix("whatsapp:").is_some_and(e164);
    if e164(from) || whatsapp || short_code || alphanumeric {
        Ok(())
    } else {
        Err(
            "must be a number in E.164 like +15551234567, whatsapp: and such a number, a short \
             code (3 to 8 digits) or an alphanumeric sender ID (up to 11 letters, digits, \
             spaces and + - _ &)",
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kind_serves_the_channels_its_requests_carry() {
        use crate::domain::Channel;
        let all = [
            Channel::Sms,
            Channel::Whatsapp,
            Channel::Voice,
            Channel::Chat,
        ];
        let served = |kind: Kind| -> Vec<Channel> {
            all.into_iter()
                .filter(|&c| kind.serves(c).is_ok())
                .collect()
        };
        assert_eq!(served(Kind::Http), all);
        assert_eq!(served(Kind::TwilioVoice), [Channel::Voice]);
        assert_eq!(served(Kind::WhatsApp), [Channel::Whatsapp]);
        assert_eq!(
            served(Kind::TwilioSms),
            [Channel::Sms, Channel::Whatsapp, Channel::Chat]
        );
        let reason = Kind::TwilioSms.serves(Channel::Voice).unwrap_err();
        assert!(reason.contains("not for channel voice"), "{reason}");
        let reason = Kind::TwilioVoice.serves(Channel::Sms).unwrap_err();
        assert!(reason.contains("only for channel voice"), "{reason}");
    }

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
            WhatsAppMessage::Template(WhatsAppTemplate {
                name: "promo".into(),
                language: "en_US".into(),
                header: Vec::new(),
                body: Vec::new(),
                body_parameter: true,
                buttons: Vec::new(),
            })
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

    #[test]
    fn whatsapp_template_parameters_are_checked_naming_each() {
        let template = |t: Value| {
            parse(
                "whatsapp",
                GRAPH_API,
                &json!({"phone_number_id": "1055", "template": t}),
                &json!({"access_token": "EAAG"}),
            )
        };
        let ok = template(json!({"name": "order", "language": "en_US",
            "header": ["{{first_name}}"], "body": ["{{a}}", "{{b}}", "c"],
            "buttons": [{"sub_type": "copy_code", "index": 2, "parameter": "{{code}}"}]}))
        .unwrap();
        let ProviderConfig::WhatsApp(WhatsAppConfig {
            message: WhatsAppMessage::Template(t),
            ..
        }) = ok
        else {
            panic!("{ok:?}")
        };
        assert_eq!(t.body.len(), 3);
        assert!(!t.body_parameter, "a body of its own replaces the message");
        assert_eq!(t.buttons[0].kind, ButtonKind::CopyCode);
        assert_eq!(t.buttons[0].index, 2);

        let mut got = fields(template(json!({"name": "order", "language": "en_US",
            "header": ["{{a}}", "{{b}}"],
            "body": ["{{unclosed", 3],
            "body_parameter": true,
            "buttons": [{"sub_type": "call", "index": 10, "parameter": null},
                        {"sub_type": "url", "index": 0, "parameter": "{{id}}", "extra": 1}]})));
        got.sort();
        assert_eq!(
            got,
            [
                "settings.template.body[0]",
                "settings.template.body[1]",
                "settings.template.buttons[0].index",
                "settings.template.buttons[0].parameter",
                "settings.template.buttons[0].sub_type",
                "settings.template.buttons[1].extra",
                "settings.template.header",
            ]
        );
        assert_eq!(
            fields(template(json!({"name": "order", "language": "en_US",
                "body": ["{{a}}"], "body_parameter": true}))),
            ["settings.template.body_parameter"]
        );
    }

    #[test]
    fn twilio_senders_are_written_as_twilio_writes_them() {
        for ok in [
            "+15005550006",
            "whatsapp:+15005550006",
            "12345",
            "Herald Co",
            "Bed&Bath",
            "ACME-Shop",
        ] {
            assert_eq!(twilio_sender(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "+1 500 555 0006",
            "15005550006123456",
            "whatsapp:15005550006",
            "+0123",
            "Herald.Co",
            "a-very-long-sender",
        ] {
            assert!(twilio_sender(bad, false).is_err(), "{bad}");
        }
        assert_eq!(twilio_sender("+15005550006", true), Ok(()));
        assert_eq!(twilio_sender("client:alice", true), Ok(()));
        assert!(twilio_sender("Herald", true).is_err());
        // Not [`parse`]'s to refuse: a provider stored before the check still loads.
        assert!(
            parse(
                "twilio_sms",
                "https://api.twilio.com",
                &json!({"from": "+1 500 555 0006"}),
                &json!({"account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t"}),
            )
            .is_ok()
        );
    }
}
