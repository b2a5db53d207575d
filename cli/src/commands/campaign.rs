//! `herald campaign …`.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveTime};
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use super::{CliError, Ctx, PageArgs, open_upload, parse_idempotency_key, show_pages};
use crate::client::{Filters, Reply};
use crate::model::{NewCampaign, Progress, QuietHours};
use crate::output;
use crate::upload::Format;

/// How often `progress --watch` polls.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive failed polls (network, 5xx) `--watch` rides out — 15 s at 500 ms — so that a
/// server restart does not end a long watch.
const WATCH_MAX_FAILURES: u32 = 30;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Channel {
    Sms,
    Whatsapp,
    Voice,
    Chat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Whatsapp => "whatsapp",
            Self::Voice => "voice",
            Self::Chat => "chat",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RecipientState {
    Pending,
    Queued,
    Sending,
    /// Its request may have been sent; waiting for a receipt or a lookup
    Unknown,
    Sent,
    Failed,
    Cancelled,
    Expired,
}

impl RecipientState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Unknown => "unknown",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

/// A daily window, local time, in which nothing is sent; it may wrap midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a draft campaign
    #[command(after_help = "Examples:
  herald campaign create spring-sale --provider $PROVIDER --channel sms \\
      --template 'Hi {{first_name}}, 20% off until Sunday' --quiet-hours 21:00-07:00
  herald campaign create vip --provider $PROVIDER --channel whatsapp --template 'Hello!' \\
      --segment $SEGMENT --start-at 2026-11-22T10:00:00+01:00
  herald campaign create black-friday --provider $TWILIO --overflow-provider $BACKUP \\
      --channel sms --template 'Doors open at 8'

Then: `herald campaign upload ID FILE` (unless --segment) and `herald campaign start ID`.")]
    Create {
        /// Campaign name
        name: String,
        /// Provider to send through
        #[arg(long, value_name = "ID")]
        provider: Uuid,
        /// Provider that takes what --provider cannot: sends beyond its rate limit, or while
        /// its circuit breaker is open (never because of a single refusal)
        #[arg(long, value_name = "ID")]
        overflow_provider: Option<Uuid>,
        /// Channel the messages go out on
        #[arg(long, value_enum)]
        channel: Channel,
        /// Message text; `{{variable}}` is replaced per recipient
        #[arg(long, value_name = "TEXT")]
        template: String,
        /// Owning tenant (operator key only)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        /// Most recipients one scheduler pass gives the campaign (its lane is topped up again
        /// as soon as workers empty it, so this is not a rate) [server default: 1000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: Option<u32>,
        /// Share among this tenant's campaigns, 1–1000 [server default: 1]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        weight: Option<u32>,
        /// When `start` (without --at) makes it run
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        start_at: Option<DateTime<FixedOffset>>,
        /// Recipients not sent by then expire; nothing is sent late
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        expires_at: Option<DateTime<FixedOffset>>,
        /// Daily local-time window with no sends, e.g. 21:00-07:00
        #[arg(long, value_name = "HH:MM-HH:MM", value_parser = parse_quiet_hours)]
        quiet_hours: Option<QuietWindow>,
        /// IANA zone of --quiet-hours [default: the tenant's]
        #[arg(long, value_name = "TZ", requires = "quiet_hours")]
        time_zone: Option<String>,
        /// Take the audience from this segment's contacts at start
        #[arg(long, value_name = "ID")]
        segment: Option<Uuid>,
        /// Creating again with the same key (within 24 h) makes no second campaign and shows
        /// the first (safe to repeat after a lost answer)
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// List campaigns, newest first
    #[command(after_help = "Examples:
  herald campaign list --status running
  herald campaign list --name spring --limit 20
  herald campaign list --tenant $TENANT --all")]
    List {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Only this tenant's campaigns (operator key)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        /// Only campaigns whose name contains this text (any case)
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a campaign's settings and progress
    Show {
        /// Campaign id
        id: Uuid,
    },
    /// Upload the audience (draft or scheduled campaigns), streamed; all rows or none
    #[command(after_help = "Formats, from the extension unless --format is given:
  .csv             header row with an `address` column; other columns are template variables
  .ndjson, .jsonl  one {\"address\": \"+33612345678\", \"variables\": {...}} per line
  .json            an array of those objects
  -                stdin, read as CSV

Examples:
  herald campaign upload $CAMPAIGN audience.csv
  zcat audience.ndjson.gz | herald campaign upload $CAMPAIGN - --format ndjson")]
    Upload {
        /// Campaign id
        id: Uuid,
        /// File to upload, or `-` for stdin
        file: PathBuf,
        /// Override the format the extension implies
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Schedule a draft campaign (running at --at, its start-at, or now)
    #[command(after_help = "Example:\n  herald campaign start $CAMPAIGN --at 2026-11-22T09:00:00Z")]
    Start {
        /// Campaign id
        id: Uuid,
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        at: Option<DateTime<FixedOffset>>,
    },
    /// Pause a running or scheduled campaign
    Pause {
        /// Campaign id
        id: Uuid,
    },
    /// Resume a paused campaign
    Resume {
        /// Campaign id
        id: Uuid,
    },
    /// Cancel a campaign: unsent recipients are cancelled (final)
    Cancel {
        /// Campaign id
        id: Uuid,
    },
    /// Counts by state, send rate, ETA and time to first send
    #[command(
        after_help = "Examples:\n  herald campaign progress $CAMPAIGN --watch\n  \
                      herald campaign progress $CAMPAIGN --watch --timeout 3600 --exit-status \
                      || alert \"campaign $CAMPAIGN did not all go out\"\n\n\
                      Exit codes as for every command, and 4: --timeout passed first, or \
                      --exit-status and not every recipient was sent."
    )]
    Progress {
        /// Campaign id
        id: Uuid,
        /// Show a live progress bar until the campaign completes or is cancelled (Ctrl-C stops)
        #[arg(long)]
        watch: bool,
        /// With --watch: give up after this many seconds, print the progress so far and
        /// exit 4 (the campaign goes on)
        #[arg(long, value_name = "SECONDS", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// With --watch: exit 4 unless the campaign completed with every recipient sent (it
        /// was cancelled, or some failed or expired)
        #[arg(long, requires = "watch")]
        exit_status: bool,
    },
    /// Failed recipients grouped by their last error, most frequent first: one cause one row
    /// (the recipient's own number left out), 50 at most and a row counting the rest
    Errors {
        /// Campaign id
        id: Uuid,
    },
    /// List a campaign's recipients, by address
    #[command(
        after_help = "Examples:\n  herald campaign recipients $CAMPAIGN --state failed --limit 20\n  herald campaign recipients $CAMPAIGN --address +33612345678"
    )]
    Recipients {
        /// Campaign id
        id: Uuid,
        #[arg(long, value_enum)]
        state: Option<RecipientState>,
        /// Only recipients whose receipts went this far (the furthest status reported, which a
        /// late or out-of-order receipt does not undo), e.g. `undelivered` or `failed`: the
        /// ones sent that never arrived (Twilio's spelling: queued, sending, sent,
        /// undelivered, partially_delivered, delivered, read, initiated, ringing,
        /// in-progress, no-answer, busy, completed, failed, canceled)
        #[arg(long, value_name = "STATUS")]
        delivery: Option<String>,
        /// Only the recipient with this address (a phone number in any spelling; without its country code, in the tenant's default region)
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

pub async fn run(ctx: &Ctx, command: CampaignCommand) -> Result<(), CliError> {
    match command {
        CampaignCommand::Create {
            name,
            provider,
            overflow_provider,
            channel,
            template,
            tenant,
            batch_size,
            weight,
            start_at,
            expires_at,
            quiet_hours,
            time_zone,
            segment,
            idempotency_key,
        } => {
            let body = NewCampaign {
                tenant_id: tenant,
                name,
                provider_id: provider,
                overflow_provider_id: overflow_provider,
                channel: channel.as_str(),
                template,
                batch_size,
                weight,
                start_at,
                expires_at,
                quiet_hours: quiet_hours.map(|w| quiet_hours_body(w, time_zone)),
                segment_id: segment,
            };
            let reply = ctx
                .client
                .create_campaign(&body, idempotency_key.as_deref())
                .await?;
            ctx.show(&reply, output::campaign)
        }
        CampaignCommand::List {
            status,
            tenant,
            name,
            page,
        } => {
            let mut filters = Filters::new();
            filters.extend(status.map(|s| ("status", s.as_str().to_owned())));
            filters.extend(tenant.map(|t| ("tenant_id", t.to_string())));
            filters.extend(name.map(|n| ("name", n)));
            show_pages(
                ctx,
                page,
                async |at| ctx.client.list_campaigns(&filters, at).await,
                output::campaigns,
            )
            .await
        }
        CampaignCommand::Show { id } => {
            let reply = ctx.client.get_campaign(id).await?;
            ctx.show(&reply, output::campaign)
        }
        CampaignCommand::Upload { id, file, format } => {
            let upload = open_upload(&file, format).await?;
            let result = ctx
                .client
                .upload_recipients(id, upload.format.content_type(), upload.body)
                .await;
            upload.bar.finish_and_clear();
            ctx.show(&result?, output::upload_summary)
        }
        CampaignCommand::Start { id, at } => {
            let reply = ctx.client.start_campaign(id, at).await?;
            ctx.show(&reply, output::campaign_status)
        }
        CampaignCommand::Pause { id } => {
            let reply = ctx.client.pause_campaign(id).await?;
            ctx.show(&reply, output::campaign_status)
        }
        CampaignCommand::Resume { id } => {
            let reply = ctx.client.resume_campaign(id).await?;
            ctx.show(&reply, output::campaign_status)
        }
        CampaignCommand::Cancel { id } => {
            let reply = ctx.client.cancel_campaign(id).await?;
            ctx.show(&reply, output::campaign_status)
        }
        CampaignCommand::Progress {
            id, watch: false, ..
        } => {
            let reply = ctx.client.campaign_progress(id).await?;
            ctx.show(&reply, output::progress)
        }
        CampaignCommand::Progress {
            id,
            watch: true,
            timeout,
            exit_status,
        } => {
            let progress = watch(ctx, id, timeout.map(Duration::from_secs)).await?;
            match progress {
                Watched::Final(progress) if exit_status => match not_all_sent(&progress) {
                    Some(why) => Err(CliError::NotDone(format!("campaign {id} {why}"))),
                    None => Ok(()),
                },
                Watched::Final(_) => Ok(()),
                Watched::TimedOut(progress, after) => Err(CliError::NotDone(format!(
                    "campaign {id} is still {} after {}s (--timeout): it goes on",
                    progress.status,
                    after.as_secs()
                ))),
            }
        }
        CampaignCommand::Errors { id } => {
            let reply = ctx.client.campaign_errors(id).await?;
            ctx.show(&reply, |list| output::error_counts(list))
        }
        CampaignCommand::Recipients {
            id,
            state,
            delivery,
            address,
            page,
        } => {
            let mut filters = Filters::new();
            filters.extend(state.map(|s| ("state", s.as_str().to_owned())));
            filters.extend(delivery.map(|d| ("delivery", d)));
            filters.extend(address.map(|a| ("address", a)));
            show_pages(
                ctx,
                page,
                async |at| ctx.client.list_recipients(id, &filters, at).await,
                output::recipients,
            )
            .await
        }
    }
}

pub fn quiet_hours_body(window: QuietWindow, time_zone: Option<String>) -> QuietHours {
    QuietHours {
        start: window.start.format("%H:%M").to_string(),
        end: window.end.format("%H:%M").to_string(),
        time_zone,
    }
}

/// How a watch ended.
enum Watched {
    Final(Progress),
    /// `--timeout` passed first: the progress last seen.
    TimedOut(Progress, Duration),
}

/// Why `--exit-status` fails a finished campaign: not every recipient was sent.
fn not_all_sent(progress: &Progress) -> Option<String> {
    if progress.status != "completed" {
        return Some(format!("ended {}", progress.status));
    }
    let missed = [
        ("failed", progress.failed),
        ("expired", progress.expired),
        ("cancelled", progress.cancelled),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} {what}"))
    .collect::<Vec<_>>();
    (!missed.is_empty()).then(|| format!("completed with {}", missed.join(" and ")))
}

/// Polls progress into a bar on stderr until the campaign is final (or `timeout` passes),
/// then prints the report like `progress` without `--watch` does.
async fn watch(ctx: &Ctx, id: Uuid, timeout: Option<Duration>) -> Result<Watched, CliError> {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:40}] {human_pos}/{human_len} ({percent}%) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));

    let interrupted = async {
        // Without a handler Ctrl-C would kill us mid-draw and leave the cursor hidden.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let deadline = timeout.map(|after| tokio::time::Instant::now() + after);
    let outcome = tokio::select! {
        result = poll_until_final(ctx, id, &bar, deadline) => result,
        () = interrupted => Err(CliError::Interrupted),
    };
    match outcome {
        Ok((reply, timed_out)) => {
            if timed_out {
                bar.abandon();
            } else {
                bar.finish();
            }
            ctx.show(&reply, output::progress)?;
            let progress = reply.parse()?;
            Ok(match timeout {
                Some(after) if timed_out => Watched::TimedOut(progress, after),
                _ => Watched::Final(progress),
            })
        }
        Err(error) => {
            bar.abandon();
            Err(error)
        }
    }
}

/// Polls until the campaign is final (its answer, `false`), or past `deadline` (the answer
/// last seen, `true`; the next one if none was seen yet).
async fn poll_until_final(
    ctx: &Ctx,
    id: Uuid,
    bar: &ProgressBar,
    deadline: Option<tokio::time::Instant>,
) -> Result<(Reply<Progress>, bool), CliError> {
    let mut ticker = tokio::time::interval(WATCH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    let mut last = None;
    let passed = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(passed);
    loop {
        let polled = tokio::select! {
            polled = async {
                ticker.tick().await;
                ctx.client.campaign_progress(id).await
            } => polled,
            () = &mut passed, if last.is_some() => {
                return Ok((last.take().expect("checked: some"), true));
            }
        };
        match polled {
            Ok(reply) => {
                failures = 0;
                let progress = reply.parse()?;
                bar.set_length(progress.total.max(0).unsigned_abs());
                bar.set_position(progress.finished().max(0).unsigned_abs());
                bar.set_message(output::watch_message(&progress));
                if progress.is_final() {
                    return Ok((reply, false));
                }
                if progress.is_draft() {
                    // Nothing happens to a draft until someone starts it: watching it would
                    // wait for ever (`… start && … progress --watch` in a script, start failed).
                    return Err(CliError::Input(format!(
                        "campaign {id} is a draft: nothing is sent until it is started \
                         (herald campaign start {id})"
                    )));
                }
                if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    return Ok((reply, true));
                }
                last = Some(reply);
            }
            Err(error) if error.is_transient() && failures < WATCH_MAX_FAILURES => {
                failures += 1;
                bar.set_message(format!("retrying: {error}"));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
        format!("{e}: expected RFC 3339, like 2026-11-22T10:00:00Z or 2026-11-22T11:00:00+01:00")
    })
}

/// `21:00-07:00` → 21:00 to 07:00 (wrapping midnight is fine; an empty window is not).
pub fn parse_quiet_hours(s: &str) -> Result<QuietWindow, String> {
    let expected = "expected HH:MM-HH:MM, like 21:00-07:00";
    let (start, end) = s
        .split_once(['-', '–'])
        .ok_or_else(|| expected.to_owned())?;
    let time = |t: &str| {
        let t = t.trim();
        // chrono would accept `9:5`; a typo there is likelier than intent.
        let well_formed =
            matches!(t.split_once(':'), Some((h, m)) if (1..=2).contains(&h.len()) && m.len() == 2);
        well_formed
            .then(|| NaiveTime::parse_from_str(t, "%H:%M").ok())
            .flatten()
            .ok_or_else(|| format!("`{t}` is not a time of day; {expected}"))
    };
    let window = QuietWindow {
        start: time(start)?,
        end: time(end)?,
    };
    if window.start == window.end {
        return Err("the quiet hours start and end at the same time".to_owned());
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_fails_a_campaign_unless_every_recipient_was_sent() {
        let ended = |status: &str, failed, expired| Progress {
            status: status.into(),
            total: 10,
            sent: 10 - failed - expired,
            failed,
            expired,
            ..Progress::default()
        };
        assert_eq!(not_all_sent(&ended("completed", 0, 0)), None);
        assert_eq!(
            not_all_sent(&ended("completed", 2, 1)).as_deref(),
            Some("completed with 2 failed and 1 expired")
        );
        assert_eq!(
            not_all_sent(&ended("cancelled", 0, 0)).as_deref(),
            Some("ended cancelled")
        );
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn quiet_hours_parse_into_start_and_end() {
        assert_eq!(
            parse_quiet_hours("21:00-07:00"),
            Ok(QuietWindow {
                start: hm(21, 0),
                end: hm(7, 0)
            })
        );
        assert_eq!(
            parse_quiet_hours("9:30 – 17:45"),
            Ok(QuietWindow {
                start: hm(9, 30),
                end: hm(17, 45)
            })
        );
        assert_eq!(parse_quiet_hours("00:00-23:59").unwrap().end, hm(23, 59));
    }

    #[test]
    fn bad_quiet_hours_say_what_is_expected() {
        for bad in [
            "21:00",
            "21-07",
            "25:00-07:00",
            "21:00-07:60",
            "21:0-07:00",
            "",
            "a-b",
        ] {
            let err = parse_quiet_hours(bad).unwrap_err();
            assert!(err.contains("HH:MM-HH:MM"), "{bad}: {err}");
        }
        assert!(
            parse_quiet_hours("08:00-08:00")
                .unwrap_err()
                .contains("same time")
        );
    }

    #[test]
    fn quiet_hours_are_sent_as_hh_mm_with_the_zone() {
        let body = quiet_hours_body(
            parse_quiet_hours("9:05-7:00").unwrap(),
            Some("Europe/Paris".into()),
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"start": "09:05", "end": "07:00", "time_zone": "Europe/Paris"})
        );
        let without_zone = quiet_hours_body(parse_quiet_hours("21:00-07:00").unwrap(), None);
        assert_eq!(
            serde_json::to_value(&without_zone).unwrap(),
            serde_json::json!({"start": "21:00", "end": "07:00"})
        );
    }

    #[test]
    fn times_are_rfc3339() {
        let t = parse_time("2026-11-22T11:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T11:00:00+01:00");
        assert!(
            parse_time("2026-11-22 11:00")
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
