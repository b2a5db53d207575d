//! What the CLI shows a person: tables, `key: value` blocks, error reports and the progress
//! bar's text. Everything here renders to a `String` so it is testable without a terminal;
//! writing it out is `main`'s job.
#![allow(clippy::print_stdout)]

use std::borrow::Cow;
use std::fmt::Display;

use chrono::SecondsFormat;
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use crate::client::ApiError;
use crate::model::{
    Campaign, Contact, DefaultProvider, Erasure, ErrorBody, ErrorCount, Key, Message, NewKey,
    Progress, Provider, ProviderSends, QuietHours, Recipient, RotatedKey, Segment, SegmentCount,
    Suppression, SuppressionsAdded, Tenant, Timestamp, UploadSummary, Webhook, WebhookEvent,
};

// ---------------------------------------------------------------------------------------------
// Building blocks

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: columns padded to their widest cell, two spaces apart.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    pub fn render(&self) -> String {
        // Cells a terminal gives the text: two for a CJK character or an emoji, none for a
        // combining mark.
        let width = |s: &str| UnicodeWidthStr::width(s);
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                // Cells are one line each; a stray newline would break the columns.
                let cell = cell.replace(['\n', '\r'], " ");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w.saturating_sub(width(&cell));
                match align {
                    Align::Left => {
                        line.push_str(&cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(&cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` as the terminal should show it: control characters other than newlines and tabs,
/// and the marks that reorder text, written out (`\u{1b}`) rather than run. Templates,
/// message texts and filters are written by tenants, and an escape sequence among them
/// would act on the operator's terminal (set its title, write its clipboard, rewrite the
/// lines above) instead of being read.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    written_out(text, |c, shown| shown.extend(c.escape_unicode()))
}

/// Whether a terminal would act on `c` rather than show it.
fn acts(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each character a terminal would act on written by `write`.
fn written_out(text: &str, write: impl Fn(char, &mut String)) -> Cow<'_, str> {
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts(c) {
            write(c, &mut shown);
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// `key: value` lines with the values aligned; a multi-line value continues under itself.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let key_width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{label:<key_width$}  {first}").trim_end());
        out.push('\n');
        for line in lines {
            out.push_str(format!("{:key_width$}  {line}", "").trim_end());
            out.push('\n');
        }
    }
    out
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// `1234567` → `1,234,567`.
pub fn format_count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A human duration: `850 ms`, `4.2s`, `45s`, `3m 12s`, `2h 05m`, `3d 04h`.
pub fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1000.0);
    }
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total % 86_400 / 3600,
        total % 3600 / 60,
        total % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

/// Sends per second, with a decimal only while it means something.
pub fn format_rate(per_second: f64) -> String {
    if per_second <= 0.0 || !per_second.is_finite() {
        "0/s".to_owned()
    } else if per_second < 100.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{}/s", format_count(per_second.round() as i64))
    }
}

/// RFC 3339 to the second, so it can be pasted back into `--start-at`.
pub fn format_time(at: Option<Timestamp>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn percent(part: i64, total: i64) -> String {
    if total <= 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / total as f64)
    }
}

pub fn pretty_json(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    // serde_json leaves DEL, the C1 controls and the marks that reorder text as they are;
    // written as JSON escapes (they only occur inside strings, all in the BMP) the output is
    // still the same JSON, and inert on a terminal.
    let mut text = written_out(&text, |c, shown| {
        shown.push_str(&format!("\\u{:04x}", u32::from(c)));
    })
    .into_owned();
    text.push('\n');
    text
}

fn compact_json(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::Object(map) if map.is_empty() => "-".to_owned(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// `error: <message>` and, for a refusal, the API's per-field and per-row details.
pub fn render_error(error: &ApiError) -> String {
    let mut out = format!("error: {error}\n");
    if let ApiError::Refused { body, .. } = error {
        out.push_str(&render_error_details(body));
    }
    out
}

fn render_error_details(body: &ErrorBody) -> String {
    let mut out = String::new();
    for field in &body.fields {
        out.push_str(&format!("  {}: {}\n", field.field, field.reason));
    }
    if body.rows.is_empty() {
        return out;
    }
    let listed = body.rows.len() as u64;
    let all = body.error_rows.unwrap_or(listed).max(listed);
    out.push_str(&format!(
        "  {} invalid {}; nothing was written:\n",
        format_count(all as i64),
        if all == 1 { "row" } else { "rows" }
    ));
    let mut table = Table::new(&[
        ("ROW", Align::Right),
        ("FIELD", Align::Left),
        ("REASON", Align::Left),
    ]);
    for row in &body.rows {
        table.row(vec![
            row.row.to_string(),
            or_dash(row.field.as_deref()),
            row.reason.clone(),
        ]);
    }
    out.push_str(&indent(&table.render(), "    "));
    if all > listed {
        out.push_str(&format!(
            "    … and {} more\n",
            format_count((all - listed) as i64)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tenants and keys

pub fn tenants(list: &[Tenant]) -> String {
    if list.is_empty() {
        return "no tenants\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("WEIGHT", Align::Right),
        ("TIME ZONE", Align::Left),
        ("CREATED", Align::Left),
    ]);
    for t in list {
        table.row(vec![
            t.id.to_string(),
            t.name.clone(),
            t.weight.to_string(),
            t.time_zone.clone(),
            format_time(t.created_at),
        ]);
    }
    table.render()
}

pub fn tenant(t: &Tenant) -> String {
    key_values(&[
        ("id", t.id.to_string()),
        ("name", t.name.clone()),
        ("weight", t.weight.to_string()),
        ("time zone", t.time_zone.clone()),
        (
            "default region",
            t.default_region
                .clone()
                .unwrap_or_else(|| "none (numbers need their country code)".to_owned()),
        ),
        (
            "live calls",
            t.max_live_calls
                .map_or_else(|| "no cap".to_owned(), |n| format!("at most {n}")),
        ),
        (
            "queued messages",
            or_dash(t.max_queued_messages.map(|n| format!("at most {n}"))),
        ),
        (
            "messages a day",
            t.max_messages_per_day
                .map_or_else(|| "no cap".to_owned(), |n| format!("at most {n}")),
        ),
        ("created", format_time(t.created_at)),
    ])
}

/// Only the key, so `KEY=$(herald tenant key …)` works.
pub fn new_key(key: &NewKey) -> String {
    format!("{}\n", key.key)
}

/// The new secret alone on stdout, like a new key, so it can be captured.
pub fn rotated_key(key: &RotatedKey) -> String {
    format!("{}\n", key.key)
}

pub fn keys(list: &[Key]) -> String {
    if list.is_empty() {
        return "no keys\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("TENANT", Align::Left),
        ("NAME", Align::Left),
        ("ACCESS", Align::Left),
        ("PREFIX", Align::Left),
        ("CREATED", Align::Left),
        ("STATE", Align::Left),
    ]);
    for k in list {
        table.row(vec![
            k.id.to_string(),
            k.tenant_id
                .map_or_else(|| "operator".to_owned(), |t| t.to_string()),
            k.name.clone(),
            k.access.clone().unwrap_or_else(|| "full".to_owned()),
            k.prefix.clone(),
            format_time(k.created_at),
            key_state(k),
        ]);
    }
    table.render()
}

pub fn key(k: &Key) -> String {
    format!(
        "key {} ({}, {}): {}\n",
        k.name,
        k.prefix,
        k.id,
        key_state(k)
    )
}

fn key_state(k: &Key) -> String {
    match (k.active, k.revoked_at) {
        (true, None) => "active".to_owned(),
        (true, Some(at)) => format!("active until {}", format_time(Some(at))),
        (false, at) => format!("revoked {}", format_time(at)),
    }
}

// ---------------------------------------------------------------------------------------------
// Providers

fn provider_owner(p: &Provider) -> String {
    // Operator-owned providers are usable by every tenant.
    p.tenant_id
        .map_or_else(|| "shared".to_owned(), |t| t.to_string())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

pub fn providers(list: &[Provider]) -> String {
    if list.is_empty() {
        return "no providers\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("TENANT", Align::Left),
        ("CREDENTIALS", Align::Left),
        ("ENDPOINT", Align::Left),
        ("RETIRED", Align::Left),
    ]);
    for p in list {
        table.row(vec![
            p.id.to_string(),
            p.name.clone(),
            provider_owner(p),
            yes_no(p.has_credentials),
            endpoint(p),
            format_time(p.retired_at),
        ]);
    }
    table.render()
}

/// A shared provider's endpoint is not shown to tenants.
fn endpoint(p: &Provider) -> String {
    p.endpoint.clone().unwrap_or_else(|| "(shared)".to_owned())
}

pub fn provider(p: &Provider) -> String {
    let ms = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    key_values(&[
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("tenant", provider_owner(p)),
        ("kind", p.kind.clone()),
        ("endpoint", endpoint(p)),
        ("credentials", yes_no(p.has_credentials)),
        ("retired", format_time(p.retired_at)),
        (
            "replaced credentials' receipts taken until",
            format_time(p.previous_credentials_until),
        ),
        ("timeout", ms(p.timeout_ms)),
        ("max in flight", or_dash(p.max_in_flight)),
        ("max attempts", or_dash(p.max_attempts)),
        ("retry base", ms(p.retry_base_ms)),
        ("retry max", ms(p.retry_max_ms)),
        (
            "rate limit",
            match p.rate_limit {
                Some(limit) => format!("{limit} per {}", ms(p.rate_window_ms)),
                None => "none".to_owned(),
            },
        ),
        (
            "settings",
            match &p.settings {
                Some(Value::Object(m)) if !m.is_empty() => Value::Object(m.clone()).to_string(),
                _ => "-".to_owned(),
            },
        ),
        ("cost per message", or_dash(p.cost_per_message)),
        (
            "unknown outcome",
            match (&p.unknown_outcome, p.unknown_window_ms) {
                (Some(policy), Some(window)) => format!("{policy} (window {window} ms)"),
                (Some(policy), None) => policy.clone(),
                _ => "-".to_owned(),
            },
        ),
        (
            "live calls",
            match p.max_live_calls {
                Some(cap) => format!(
                    "at most {cap} ({} each without a final status)",
                    ms(p.live_call_timeout_ms)
                ),
                None => "no cap".to_owned(),
            },
        ),
        ("receipts", or_dash(p.receipt_path.as_ref())),
        ("sent this month", or_dash(p.sent_this_month)),
        ("commitment", commitment(p)),
        ("created", format_time(p.created_at)),
    ])
}

/// `1000000 a month: 412000 sent, 450000 due by now (behind)`.
fn commitment(p: &Provider) -> String {
    let Some(monthly) = p.monthly_commitment else {
        return "none".to_owned();
    };
    let sent = p.sent_this_month.unwrap_or(0);
    match p.commitment_due_by_now {
        Some(due) => format!(
            "{monthly} a month: {sent} sent, {due} due by now ({})",
            if sent < due { "behind" } else { "on pace" }
        ),
        None => format!("{monthly} a month: {sent} sent"),
    }
}

pub fn webhook(w: &Webhook) -> String {
    let Some(url) = &w.url else {
        return format!(
            "tenant {} has no webhook: its messages' status events are not posted\n",
            w.tenant_id
        );
    };
    let counted = |n: i64| {
        if n >= 100_000 {
            "at least 100000 events".to_owned()
        } else {
            format!("{n} events")
        }
    };
    let when = format_time;
    key_values(&[
        ("tenant", w.tenant_id.to_string()),
        ("url", url.clone()),
        ("set", when(w.updated_at)),
        (
            "disabled",
            match (&w.disabled_at, &w.disabled_reason) {
                (Some(at), why) => format!(
                    "since {} ({}): set it again to enable it",
                    at.to_rfc3339(),
                    why.as_deref().unwrap_or("answered 410 Gone")
                ),
                (None, _) => "no".to_owned(),
            },
        ),
        ("failing since", when(w.failing_since)),
        ("next post", when(w.resume_at)),
        ("old secret signs until", when(w.previous_secret_until)),
        ("waiting", counted(w.waiting)),
        ("oldest waiting", when(w.oldest_waiting_at)),
        ("last failure", or_dash(w.last_failure.clone())),
        ("last failed", when(w.last_failed_at)),
        ("given up", counted(w.abandoned)),
        ("last given up", when(w.last_abandoned_at)),
    ])
}

pub fn webhook_events(list: &[WebhookEvent]) -> String {
    if list.is_empty() {
        return "no webhook events\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("TYPE", Align::Left),
        ("OCCURRED", Align::Left),
        ("MESSAGE", Align::Left),
        ("STATE", Align::Left),
        ("DELIVERY", Align::Left),
        ("POSTS", Align::Right),
        ("AT", Align::Left),
        ("LAST FAILURE", Align::Left),
    ]);
    for e in list {
        // When it was delivered or given up; while waiting, not posted before then.
        let at = match (e.delivered_at.or(e.abandoned_at), e.next_attempt_at) {
            (Some(at), _) => format_time(Some(at)),
            (None, Some(next)) => format!("next {}", format_time(Some(next))),
            (None, None) => "-".to_owned(),
        };
        let state = e.message.as_ref().map(|m| match &m.delivery_status {
            Some(status) => format!("{} ({status})", m.state),
            None => m.state.clone(),
        });
        table.row(vec![
            e.id.to_string(),
            e.kind.clone(),
            format_time(Some(e.occurred_at)),
            or_dash(e.message.as_ref().map(|m| m.id)),
            or_dash(state),
            e.delivery.clone(),
            e.attempts.to_string(),
            at,
            or_dash(e.last_failure.as_deref()),
        ]);
    }
    table.render()
}

pub fn default_providers(list: &[DefaultProvider]) -> String {
    if list.is_empty() {
        return "no default providers (messages must name their provider)\n".to_owned();
    }
    let mut table = Table::new(&[
        ("CHANNEL", Align::Left),
        ("PROVIDER", Align::Left),
        ("OVERFLOW", Align::Left),
    ]);
    for d in list {
        table.row(vec![
            d.channel.clone(),
            d.provider_id.to_string(),
            or_dash(d.overflow_provider_id),
        ]);
    }
    table.render()
}

// ---------------------------------------------------------------------------------------------
// Campaigns

fn quiet_hours(q: Option<&QuietHours>) -> String {
    match q {
        None => "-".to_owned(),
        Some(q) => {
            let zone = q
                .time_zone
                .as_deref()
                .map_or_else(String::new, |z| format!(" ({z})"));
            format!("{}-{}{zone}", short_time(&q.start), short_time(&q.end))
        }
    }
}

/// `21:00:00` → `21:00`: the API may echo times with seconds that are always zero here.
fn short_time(t: &str) -> &str {
    t.strip_suffix(":00").filter(|s| s.len() == 5).unwrap_or(t)
}

fn finished_of_total(p: Option<&Progress>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| format!("{}/{}", format_count(p.finished()), format_count(p.total)),
    )
}

pub fn campaigns(list: &[Campaign]) -> String {
    if list.is_empty() {
        return "no campaigns\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("TENANT", Align::Left),
        ("STATUS", Align::Left),
        ("CHANNEL", Align::Left),
        ("FINISHED", Align::Right),
        ("CREATED", Align::Left),
    ]);
    for c in list {
        table.row(vec![
            c.id.to_string(),
            c.name.clone(),
            or_dash(c.tenant_name.as_deref()),
            c.status.clone(),
            c.channel.clone(),
            finished_of_total(c.progress.as_ref()),
            format_time(c.created_at),
        ]);
    }
    table.render()
}

pub fn campaign(c: &Campaign) -> String {
    let progress = c.progress.as_ref().map_or_else(
        || "-".to_owned(),
        |p| {
            let delivered = if p.delivery.delivered > 0 {
                format!(", {} delivered", format_count(p.delivery.delivered))
            } else {
                String::new()
            };
            format!(
                "{} finished of {} ({} sent{delivered}, {} failed)",
                format_count(p.finished()),
                format_count(p.total),
                format_count(p.sent),
                format_count(p.failed)
            )
        },
    );
    let at = |time: fn(&Progress) -> Option<Timestamp>| c.progress.as_ref().and_then(time);
    let mut status = c.status.clone();
    // Kept after a cancel too: only a campaign still paused is paused for it.
    if let Some(why) = c.progress.as_ref().and_then(|p| p.pause_reason.as_deref())
        && c.status == "paused"
    {
        status.push_str(&format!(
            " by Herald: {why} (fix the provider, then resume)"
        ));
    }
    key_values(&[
        ("id", c.id.to_string()),
        ("name", c.name.clone()),
        ("status", status),
        ("tenant", or_dash(c.tenant_id)),
        ("provider", or_dash(c.provider_id)),
        ("overflow provider", or_dash(c.overflow_provider_id)),
        ("channel", c.channel.clone()),
        ("template", c.template.clone()),
        ("batch size", or_dash(c.batch_size)),
        ("weight", or_dash(c.weight)),
        ("segment", or_dash(c.segment_id)),
        ("quiet hours", quiet_hours(c.quiet_hours.as_ref())),
        ("start at", format_time(c.start_at)),
        ("expires at", format_time(c.expires_at)),
        ("created", format_time(c.created_at)),
        ("started", format_time(at(|p| p.started_at))),
        ("first sent", format_time(at(|p| p.first_sent_at))),
        ("completed", format_time(at(|p| p.completed_at))),
        ("progress", progress),
        ("sent via", sent_via(&c.by_provider)),
    ])
}

/// Sends, cost and delivery per provider on one line:
/// `twilio-eu 9,612 (75.93, 98.2% delivered), backup 388 (19.40)`.
fn sent_via(sends: &[ProviderSends]) -> String {
    if sends.is_empty() {
        return "-".to_owned();
    }
    sends
        .iter()
        .map(|s| {
            let name = if s.provider.is_empty() {
                s.provider_id.to_string()
            } else {
                s.provider.clone()
            };
            let mut notes = Vec::new();
            if let Some(cost) = s.cost {
                notes.push(format!("{cost:.2}"));
            }
            if let Some(rate) = s
                .delivery
                .delivered_rate
                .filter(|_| s.delivery.delivered > 0)
            {
                notes.push(format!("{:.1}% delivered", rate * 100.0));
            }
            if notes.is_empty() {
                format!("{name} {}", format_count(s.sent))
            } else {
                format!("{name} {} ({})", format_count(s.sent), notes.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one line an action (start, pause, …) answers with.
pub fn campaign_status(c: &Campaign) -> String {
    let when = match (c.status.as_str(), c.start_at) {
        ("scheduled", Some(at)) => format!(", starts at {}", format_time(Some(at))),
        _ => String::new(),
    };
    let why = match c.progress.as_ref().and_then(|p| p.pause_reason.as_deref()) {
        Some(reason) if c.status == "paused" => format!(" by Herald: {reason}"),
        _ => String::new(),
    };
    format!("campaign {} ({}): {}{when}{why}\n", c.name, c.id, c.status)
}

pub fn progress(p: &Progress) -> String {
    let mut out = key_values(&[("status", p.status.clone())]);
    // Kept once a campaign Herald paused is cancelled: no advice to resume it then.
    if let Some(reason) = p.pause_reason.as_ref().filter(|_| p.status == "paused") {
        out.push_str(&key_values(&[(
            "paused because",
            format!("{reason} (fix the provider, then resume)"),
        )]));
    }
    out.push('\n');
    let mut table = Table::new(&[
        ("STATE", Align::Left),
        ("COUNT", Align::Right),
        ("SHARE", Align::Right),
    ]);
    for (state, n) in [
        ("pending", p.pending),
        ("queued", p.queued),
        ("sending", p.sending),
        ("unknown", p.unknown),
        ("sent", p.sent),
        ("failed", p.failed),
        ("cancelled", p.cancelled),
        ("expired", p.expired),
    ] {
        // An outcome that never went unknown is not worth a line.
        if state == "unknown" && n == 0 {
            continue;
        }
        table.row(vec![state.to_owned(), format_count(n), percent(n, p.total)]);
    }
    table.row(vec![
        "total".to_owned(),
        format_count(p.total),
        String::new(),
    ]);
    out.push_str(&table.render());
    out.push('\n');
    let d = &p.delivery;
    if d.delivered + d.undelivered + d.failed + d.read > 0 {
        let mut receipts = Table::new(&[
            ("RECEIPTS", Align::Left),
            ("COUNT", Align::Right),
            ("OF SENT", Align::Right),
        ]);
        for (status, n) in [
            ("delivered", d.delivered),
            ("read", d.read),
            ("undelivered", d.undelivered),
            ("failed", d.failed),
        ] {
            receipts.row(vec![status.to_owned(), format_count(n), percent(n, p.sent)]);
        }
        out.push_str(&receipts.render());
        out.push('\n');
    }
    out.push_str(&key_values(&[
        ("send rate", format_rate(p.send_rate)),
        ("ETA", eta(p)),
        (
            "time to first send",
            p.time_to_first_send_ms
                .map_or_else(|| "-".to_owned(), |ms| format_duration(ms / 1000.0)),
        ),
        ("started", format_time(p.started_at)),
        ("first sent", format_time(p.first_sent_at)),
        ("completed", format_time(p.completed_at)),
    ]));
    if p.live_calls > 0 {
        out.push_str(&key_values(&[("calls live", format_count(p.live_calls))]));
    }
    out
}

fn eta(p: &Progress) -> String {
    if p.is_final() {
        return "done".to_owned();
    }
    p.eta_seconds.map_or_else(
        // The API gives no ETA when nothing is moving (paused, quiet hours, not started).
        || "-".to_owned(),
        format_duration,
    )
}

/// The text beside the `--watch` progress bar.
pub fn watch_message(p: &Progress) -> String {
    let mut parts = vec![p.status.clone()];
    if let Some(reason) = p.pause_reason.as_ref().filter(|_| p.status == "paused") {
        parts.push(format!("paused by Herald: {reason}"));
    }
    if !p.is_final() {
        parts.push(format_rate(p.send_rate));
        if let Some(eta) = p.eta_seconds {
            parts.push(format!("ETA {}", format_duration(eta)));
        }
    }
    if p.delivery.delivered > 0 {
        parts.push(format!("{} delivered", format_count(p.delivery.delivered)));
    }
    if p.failed > 0 {
        parts.push(format!("{} failed", format_count(p.failed)));
    }
    if p.expired > 0 {
        parts.push(format!("{} expired", format_count(p.expired)));
    }
    parts.join(" · ")
}

pub fn error_counts(list: &[ErrorCount]) -> String {
    if list.is_empty() {
        return "no failed recipients\n".to_owned();
    }
    let mut table = Table::new(&[("COUNT", Align::Right), ("REASON", Align::Left)]);
    for e in list {
        table.row(vec![format_count(e.count), e.reason.clone()]);
    }
    table.render()
}

pub fn upload_summary(s: &UploadSummary) -> String {
    let mut pairs = vec![
        ("received", format_count(s.received)),
        ("inserted", format_count(s.inserted)),
    ];
    if let Some(updated) = s.updated {
        pairs.push(("updated", format_count(updated)));
    }
    if let Some(duplicates) = s.duplicates {
        pairs.push(("duplicates", format_count(duplicates)));
    }
    key_values(&pairs)
}

pub fn recipients(list: &[Recipient]) -> String {
    if list.is_empty() {
        return "no recipients\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("ADDRESS", Align::Left),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("SENT", Align::Left),
        ("DELIVERY", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for r in list {
        let delivery = match (&r.delivery_status, &r.delivery_error) {
            (Some(status), Some(code)) => format!("{status} ({code})"),
            (Some(status), None) => status.clone(),
            (None, _) => "-".to_owned(),
        };
        table.row(vec![
            r.id.to_string(),
            r.address.clone(),
            r.state.clone(),
            r.attempts.to_string(),
            format_time(r.sent_at),
            delivery,
            or_dash(r.last_error.as_deref()),
        ]);
    }
    table.render()
}

// ---------------------------------------------------------------------------------------------
// Contacts and segments

pub fn contacts(list: &[Contact]) -> String {
    if list.is_empty() {
        return "no contacts\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("TENANT", Align::Left),
        ("ADDRESS", Align::Left),
        ("CREATED", Align::Left),
        ("ATTRIBUTES", Align::Left),
    ]);
    for c in list {
        table.row(vec![
            c.id.to_string(),
            or_dash(c.tenant_name.as_deref()),
            c.address.clone(),
            format_time(c.created_at),
            compact_json(&c.attributes),
        ]);
    }
    table.render()
}

pub fn segments(list: &[Segment]) -> String {
    if list.is_empty() {
        return "no segments\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("TENANT", Align::Left),
        ("FILTER", Align::Left),
    ]);
    for s in list {
        table.row(vec![
            s.id.to_string(),
            s.name.clone(),
            or_dash(s.tenant_id),
            s.filter.clone(),
        ]);
    }
    table.render()
}

pub fn segment(s: &Segment) -> String {
    key_values(&[
        ("id", s.id.to_string()),
        ("name", s.name.clone()),
        ("tenant", or_dash(s.tenant_id)),
        ("filter", s.filter.clone()),
        ("created", format_time(s.created_at)),
    ])
}

pub fn segment_count(c: &SegmentCount) -> String {
    key_values(&[("contacts", format_count(c.contacts))])
}

pub fn erasure(e: &Erasure) -> String {
    let mut text = key_values(&[
        ("address", e.address.clone()),
        ("contacts deleted", format_count(e.contacts)),
        ("messages found", format_count(e.messages)),
        ("cancelled unsent", format_count(e.cancelled)),
        ("in flight", format_count(e.in_flight)),
        ("suppressions kept", format_count(e.suppressions_kept)),
    ]);
    if e.in_flight > 0 {
        text.push_str(
            "messages in flight are never sent again, and are erased once they have ended \
             (run this again to see how many are left)\n",
        );
    }
    text
}

pub fn suppressions_added(s: &SuppressionsAdded) -> String {
    key_values(&[
        ("received", format_count(s.received)),
        ("added", format_count(s.added)),
    ])
}

pub fn suppressions(list: &[Suppression]) -> String {
    if list.is_empty() {
        return "no suppressions\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("TENANT", Align::Left),
        ("CHANNEL", Align::Left),
        ("ADDRESS", Align::Left),
        ("SOURCE", Align::Left),
        ("CREATED", Align::Left),
        ("REASON", Align::Left),
    ]);
    for s in list {
        table.row(vec![
            s.id.to_string(),
            s.tenant_id
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            s.channel.clone(),
            s.address.clone(),
            s.source.clone(),
            format_time(s.created_at),
            or_dash(s.reason.as_deref()),
        ]);
    }
    table.render()
}

// ---------------------------------------------------------------------------------------------
// Transactional messages

pub fn messages(list: &[Message]) -> String {
    if list.is_empty() {
        return "no messages\n".to_owned();
    }
    // An operator's list across tenants says whose each message is.
    let tenants = list.iter().any(|m| m.tenant_id != list[0].tenant_id);
    let mut columns = vec![("ID", Align::Left)];
    if tenants {
        columns.push(("TENANT", Align::Left));
    }
    columns.extend([
        ("TO", Align::Left),
        ("CHANNEL", Align::Left),
        ("STATE", Align::Left),
        ("DELIVERY", Align::Left),
        ("CREATED", Align::Left),
    ]);
    let mut table = Table::new(&columns);
    for m in list {
        let mut row = vec![m.id.to_string()];
        if tenants {
            row.push(or_dash(m.tenant_id));
        }
        row.extend([
            m.to.clone(),
            m.channel.clone(),
            m.state.clone(),
            or_dash(m.delivery_status.as_deref()),
            format_time(m.created_at),
        ]);
        table.row(row);
    }
    table.render()
}

pub fn message(m: &Message) -> String {
    let mut pairs = vec![
        ("id", m.id.to_string()),
        ("to", m.to.clone()),
        ("channel", m.channel.clone()),
        ("state", m.state.clone()),
        ("delivery", or_dash(m.delivery_status.as_deref())),
        ("attempts", m.attempts.to_string()),
        ("provider", or_dash(m.provider_id)),
        ("sent via", or_dash(m.sent_via)),
        ("provider id", or_dash(m.provider_message_id.as_deref())),
        ("cost", or_dash(m.cost)),
        ("created", format_time(m.created_at)),
        ("sent", format_time(m.sent_at)),
        ("expires", format_time(m.expires_at)),
        ("quiet hours", quiet_hours(m.quiet_hours.as_ref())),
        ("text", or_dash(m.text.as_deref())),
    ];
    if let Some(key) = &m.idempotency_key {
        pairs.push(("idempotency key", key.clone()));
    }
    if let Some(error) = m.last_error.as_deref().or(m.delivery_error.as_deref()) {
        pairs.push(("last error", error.to_owned()));
    }
    if let Some(held) = &m.held {
        pairs.push(("held", held.clone()));
    }
    for r in &m.receipts {
        let mut line = format!(
            "{} {} ({})",
            format_time(r.received_at),
            r.status,
            r.raw_status
        );
        if let Some(code) = &r.error_code {
            line.push_str(&format!(" error {code}"));
        }
        if r.duplicate {
            line.push_str(" duplicate");
        }
        pairs.push(("receipt", line));
    }
    key_values(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldError, RowError};

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("COUNT", Align::Right),
            ("NOTE", Align::Left),
        ]);
        table.row(vec!["a".into(), "1".into(), "x".into()]);
        table.row(vec!["longer-name".into(), "12,345".into(), String::new()]);
        assert_eq!(
            table.render(),
            "NAME          COUNT  NOTE\n\
             a                 1  x\n\
             longer-name  12,345\n"
        );
    }

    #[test]
    fn tables_count_characters_not_bytes_and_flatten_newlines() {
        let mut table = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        table.row(vec!["été".into(), "two\nlines".into()]);
        table.row(vec!["x".into(), "y".into()]);
        assert_eq!(table.render(), "A    B\nété  two lines\nx    y\n");
    }

    #[test]
    fn text_that_would_act_on_the_terminal_is_shown_instead() {
        assert_eq!(
            terminal_safe("Hi {{name}},\n\tsee you"),
            "Hi {{name}},\n\tsee you"
        );
        assert_eq!(
            terminal_safe("a\u{1b}]52;c;aGk=\u{7}b\r\u{9b}2K"),
            "a\\u{1b}]52;c;aGk=\\u{7}b\\u{d}\\u{9b}2K"
        );
        assert_eq!(terminal_safe("x\u{202e}cod.exe"), "x\\u{202e}cod.exe");
        assert_eq!(terminal_safe("東京セール 🎉"), "東京セール 🎉");
    }

    #[test]
    fn json_output_stays_json_and_inert() {
        let value = serde_json::json!({"text": "\u{5e9}\u{200f}\u{7f}\u{9b}2K\u{1b}]0;x"});
        let shown = pretty_json(&value);
        assert!(!shown.chars().any(acts), "{shown:?}");
        assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), value);
        // What the terminal gets is what was printed.
        assert_eq!(terminal_safe(&shown), shown);
    }

    #[test]
    fn wide_characters_keep_the_columns_aligned() {
        let mut table = Table::new(&[("NAME", Align::Left), ("SENT", Align::Right)]);
        table.row(vec!["東京セール".into(), "1".into()]);
        table.row(vec!["promo".into(), "22".into()]);
        assert_eq!(
            table.render(),
            "NAME        SENT\n東京セール     1\npromo         22\n"
        );
    }

    #[test]
    fn key_values_align_and_continue_multiline_values() {
        assert_eq!(
            key_values(&[
                ("id", "42".into()),
                ("template", "Hi {{name}},\nsee you".into()),
                ("segment", String::new()),
            ]),
            "id:        42\ntemplate:  Hi {{name}},\n           see you\nsegment:\n"
        );
    }

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1000), "1,000");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_count(-1234), "-1,234");

        assert_eq!(format_duration(0.85), "850 ms");
        assert_eq!(format_duration(4.25), "4.2s");
        assert_eq!(format_duration(45.0), "45s");
        assert_eq!(format_duration(192.0), "3m 12s");
        assert_eq!(format_duration(7500.0), "2h 05m");
        assert_eq!(format_duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(format_duration(f64::NAN), "-");

        assert_eq!(format_rate(0.0), "0/s");
        assert_eq!(format_rate(12.34), "12.3/s");
        assert_eq!(format_rate(1512.4), "1,512/s");
    }

    fn progress_fixture() -> Progress {
        Progress {
            status: "running".into(),
            total: 10_000,
            pending: 4_000,
            queued: 500,
            sending: 100,
            sent: 5_300,
            failed: 100,
            send_rate: 512.4,
            eta_seconds: Some(192.0),
            time_to_first_send_ms: Some(850.0),
            ..Progress::default()
        }
    }

    #[test]
    fn progress_report_shows_counts_rate_eta_and_first_send() {
        assert_eq!(
            progress(&progress_fixture()),
            "status:  running\n\
             \n\
             STATE       COUNT  SHARE\n\
             pending     4,000  40.0%\n\
             queued        500   5.0%\n\
             sending       100   1.0%\n\
             sent        5,300  53.0%\n\
             failed        100   1.0%\n\
             cancelled       0   0.0%\n\
             expired         0   0.0%\n\
             total      10,000\n\
             \n\
             send rate:           512/s\n\
             ETA:                 3m 12s\n\
             time to first send:  850 ms\n\
             started:             -\n\
             first sent:          -\n\
             completed:           -\n"
        );
    }

    #[test]
    fn receipts_and_unknown_outcomes_show_when_there_are_any() {
        let mut p = progress_fixture();
        p.unknown = 12;
        p.delivery.delivered = 5_000;
        p.delivery.read = 1_000;
        p.delivery.undelivered = 200;
        let shown = progress(&p);
        assert!(shown.contains("unknown        12   0.1%\n"), "{shown}");
        assert!(
            shown.contains(
                "RECEIPTS     COUNT  OF SENT\n\
                 delivered    5,000    94.3%\n\
                 read         1,000    18.9%\n\
                 undelivered    200     3.8%\n\
                 failed           0     0.0%\n"
            ),
            "{shown}"
        );
        assert!(!progress(&progress_fixture()).contains("RECEIPTS"));
    }

    #[test]
    fn progress_of_an_empty_or_finished_campaign() {
        let text = progress(&Progress {
            status: "draft".into(),
            ..Progress::default()
        });
        assert!(text.contains("\npending        0      -\n"), "{text}");
        assert!(text.contains("ETA:                 -\n"), "{text}");
        let done = Progress {
            status: "completed".into(),
            eta_seconds: None,
            ..progress_fixture()
        };
        assert!(progress(&done).contains("ETA:                 done\n"));
    }

    #[test]
    fn watch_message_summarizes_the_state() {
        assert_eq!(
            watch_message(&progress_fixture()),
            "running · 512/s · ETA 3m 12s · 100 failed"
        );
        let done = Progress {
            status: "completed".into(),
            failed: 0,
            ..progress_fixture()
        };
        assert_eq!(watch_message(&done), "completed");
    }

    #[test]
    fn messages_of_several_tenants_say_whose_each_is() {
        let message = |tenant: &str| -> Message {
            serde_json::from_value(serde_json::json!({
                "id": "7d3c8a2e-0000-4000-8000-000000000001", "tenant_id": tenant,
                "to": "+15551230001", "channel": "sms", "state": "sent"}))
            .unwrap()
        };
        let a = "7d3c8a2e-0000-4000-8000-00000000000a";
        let b = "7d3c8a2e-0000-4000-8000-00000000000b";
        let one = messages(&[message(a), message(a)]);
        assert!(!one.contains("TENANT") && !one.contains(a), "{one}");
        let two = messages(&[message(a), message(b)]);
        assert!(
            two.starts_with("ID") && two.contains("TENANT") && two.contains(b),
            "{two}"
        );
    }

    #[test]
    fn a_campaign_herald_paused_says_why() {
        let paused = Progress {
            status: "paused".into(),
            pause_reason: Some("twilio 20003 (HTTP 401): Authenticate".into()),
            eta_seconds: None,
            ..progress_fixture()
        };
        let shown = progress(&paused);
        assert!(
            shown.starts_with(
                "status:  paused\n\
                 paused because:  twilio 20003 (HTTP 401): Authenticate (fix the provider, then resume)\n"
            ),
            "{shown}"
        );
        assert_eq!(
            watch_message(&paused),
            "paused · paused by Herald: twilio 20003 (HTTP 401): Authenticate · 512/s · 100 failed"
        );
        // Cancelled since, it keeps its reason: no advice to resume it.
        let cancelled = Progress {
            status: "cancelled".into(),
            ..paused
        };
        assert!(
            !progress(&cancelled).contains("paused"),
            "{}",
            progress(&cancelled)
        );
        assert!(
            !watch_message(&cancelled).contains("paused"),
            "{}",
            watch_message(&cancelled)
        );
    }

    #[test]
    fn a_campaign_shows_when_it_started_first_sent_and_completed() {
        // As the API answers: the times are the progress's.
        let campaign: Campaign = serde_json::from_value(serde_json::json!({
            "id": "7d3c8a2e-0000-4000-8000-000000000001", "name": "spring", "status": "completed",
            "progress": {"status": "completed", "total": 2, "pending": 0, "queued": 0,
                         "sending": 0, "unknown": 0, "sent": 2, "failed": 0, "cancelled": 0,
                         "expired": 0, "live_calls": 0, "send_rate": 0.0,
                         "delivery": {"delivered": 0, "undelivered": 0, "read": 0},
                         "started_at": "2026-12-06T10:00:00Z",
                         "first_sent_at": "2026-12-06T10:00:01Z",
                         "completed_at": "2026-12-06T10:00:05Z"}
        }))
        .unwrap();
        let shown = self::campaign(&campaign);
        assert_eq!(
            campaign_detail_times(&shown),
            [
                "started:            2026-12-06T10:00:00Z",
                "first sent:         2026-12-06T10:00:01Z",
                "completed:          2026-12-06T10:00:05Z"
            ]
        );
    }

    #[test]
    fn a_campaign_herald_paused_shows_why_in_its_details() {
        let campaign: Campaign = serde_json::from_value(serde_json::json!({
            "id": "7d3c8a2e-0000-4000-8000-000000000001", "name": "spring", "status": "paused",
            "progress": {"status": "paused", "total": 2,
                         "pause_reason": "twilio 20003 (HTTP 401): Authenticate"}
        }))
        .unwrap();
        let shown = self::campaign(&campaign);
        assert!(
            shown.contains(
                "status:             paused by Herald: twilio 20003 (HTTP 401): Authenticate \
                 (fix the provider, then resume)\n"
            ),
            "{shown}"
        );
        // Cancelled since: the reason is kept, but it is no longer why.
        let cancelled: Campaign = serde_json::from_value(serde_json::json!({
            "id": "7d3c8a2e-0000-4000-8000-000000000001", "name": "spring", "status": "cancelled",
            "progress": {"status": "cancelled", "total": 2,
                         "pause_reason": "twilio 20003 (HTTP 401): Authenticate"}
        }))
        .unwrap();
        assert!(self::campaign(&cancelled).contains("status:             cancelled\n"));
    }

    fn campaign_detail_times(shown: &str) -> Vec<&str> {
        shown
            .lines()
            .filter(|l| {
                ["started:", "first sent:", "completed:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect()
    }

    fn refused(body: ErrorBody) -> ApiError {
        ApiError::Refused {
            status: 422,
            body,
            retry_after: None,
        }
    }

    #[test]
    fn row_reports_list_rows_and_how_many_more() {
        let error = refused(ErrorBody {
            message: "invalid upload".into(),
            fields: vec![],
            rows: vec![
                RowError {
                    row: 3,
                    field: Some("address".into()),
                    reason: "`12345` is not an E.164 number".into(),
                },
                RowError {
                    row: 12,
                    field: None,
                    reason: "not a JSON object".into(),
                },
            ],
            error_rows: Some(1502),
        });
        assert_eq!(
            render_error(&error),
            "error: invalid upload (HTTP 422)\n\
             \x20 1,502 invalid rows; nothing was written:\n\
             \x20   ROW  FIELD    REASON\n\
             \x20     3  address  `12345` is not an E.164 number\n\
             \x20    12  -        not a JSON object\n\
             \x20   … and 1,500 more\n"
        );
    }

    #[test]
    fn field_errors_are_listed_and_complete_reports_say_no_more() {
        let error = refused(ErrorBody {
            message: "invalid campaign".into(),
            fields: vec![FieldError {
                field: "template".into(),
                reason: "unterminated `{{`".into(),
            }],
            rows: vec![RowError {
                row: 1,
                field: Some("first_name".into()),
                reason: "missing".into(),
            }],
            error_rows: Some(1),
        });
        let text = render_error(&error);
        assert!(text.starts_with(
            "error: invalid campaign (HTTP 422)\n  template: unterminated `{{`\n  1 invalid row;"
        ));
        assert!(!text.contains("more"), "{text}");
    }

    #[test]
    fn network_errors_are_one_line() {
        let error = ApiError::Unreachable {
            url: "http://127.0.0.1:8080/".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            render_error(&error),
            "error: cannot reach the admin server at http://127.0.0.1:8080/: Connection refused (os error 111)\n"
        );
    }

    #[test]
    fn quiet_hours_display_drops_zero_seconds() {
        let q = QuietHours {
            start: "21:00:00".into(),
            end: "07:30".into(),
            time_zone: Some("Europe/Paris".into()),
        };
        assert_eq!(quiet_hours(Some(&q)), "21:00-07:30 (Europe/Paris)");
        assert_eq!(quiet_hours(None), "-");
    }

    #[test]
    fn recipients_show_what_their_provider_last_said() {
        let list: Vec<Recipient> = serde_json::from_value(serde_json::json!([
            {"id": 1, "address": "+15550000001", "state": "sent", "attempts": 1,
             "delivery_status": "undelivered", "delivery_error": "30003"},
            {"id": 2, "address": "+15550000002", "state": "pending", "attempts": 0}
        ]))
        .unwrap();
        let shown = recipients(&list);
        assert!(
            shown.lines().next().unwrap().contains("DELIVERY"),
            "{shown}"
        );
        assert!(shown.contains("undelivered (30003)"), "{shown}");
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(campaigns(&[]), "no campaigns\n");
        assert_eq!(error_counts(&[]), "no failed recipients\n");
    }
}
