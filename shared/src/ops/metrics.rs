//! Herald's Prometheus metrics: every name in one place, with its help text and unit.
//!
//! Recorded with the `metrics` facade where things happen; rendered by
//! `metrics-exporter-prometheus` on the ops listener's `/metrics`. Labels stay bounded:
//! tenants, providers and lanes are few and long-lived; campaign ids (many, short-lived)
//! label messages only when the operator asks for them (`HERALD_METRICS_CAMPAIGN_LABELS`).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Messages by outcome: labels `tenant`, `provider`, `outcome` (sent, failed, retried,
/// throttled, deferred, expired, unknown, suppressed: failed unsent at the lease, its address
/// on the tenant's suppression list), and `campaign` where enabled.
pub const MESSAGES: &str = "herald_messages_total";
/// Status events posted to tenants' webhooks, by `outcome`: `delivered` (answered 2xx),
/// `failed` (to be posted again), `abandoned` (not delivered a day after it happened or was
/// recovered, posted or not: no more tries unless recovered again).
pub const WEBHOOK_POSTS: &str = "herald_webhook_posts_total";
/// Receipts stored, by `provider` and `status`.
pub const RECEIPTS: &str = "herald_receipts_total";
/// Receipts taken, by `result`: `matched` (its recipient found and the first copy of its
/// status, applied if it ranks above what the recipient has), `parked` (no recipient yet: it
/// waits for its send to be recorded, or becomes an orphan), `duplicate` (a copy of one
/// stored before, only kept) and `unknown_number` (a WhatsApp status of a number none of the
/// tenant's providers of that Meta app has: no message of Herald's, not stored).
pub const RECEIPTS_RESULTS: &str = "herald_receipts_results_total";
/// Receipts that matched no recipient for `HERALD_RECEIPT_ORPHAN_AFTER_MS` (the leader's
/// housekeeping; copies not counted).
pub const RECEIPTS_ORPHANED: &str = "herald_receipts_orphaned_total";
/// Webhooks refused, by `reason` (unsigned, bad_signature, no_provider, malformed,
/// not_stored).
pub const RECEIPTS_REFUSED: &str = "herald_receipts_refused_total";
/// Recipients' STOP and START recorded (inbound messages to a tenant's own Twilio number),
/// by `said` (stop, start).
pub const CONSENTS: &str = "herald_consents_total";
/// Provider requests' duration, by `provider`.
pub const PROVIDER_REQUEST_DURATION: &str = "herald_provider_request_duration_seconds";
/// Provider requests in flight in this worker, by `provider`.
pub const PROVIDER_IN_FLIGHT: &str = "herald_provider_in_flight";
/// 1 while the provider's circuit breaker is open (requests held back), by `provider`.
pub const BREAKER_OPEN: &str = "herald_breaker_open";
/// Send slots of rate-limited providers, by `provider` and `result` (reserved: taken for a
/// request; late: no slot before the lease's deadline or the expiry; missed: the request
/// could not start on its slot; held_back: left unused, its campaign stopped sending while
/// it waited; unchecked: left unused, whether its campaign may still send could not be told
/// in time; failed: the reservation itself failed, the database out of reach).
pub const PACING_SLOTS: &str = "herald_pacing_slots_total";
/// Recipients published into a provider's lane (confirmed), by `lane`.
pub const LANE_PUBLISHED: &str = "herald_lane_published_total";
/// Messages ready in a lane's queue at the last tick, by `lane` (each a batch of recipients).
pub const LANE_QUEUE_DEPTH: &str = "herald_lane_queue_depth_messages";
/// Consumers (worker lanes) of a lane's queue at the last tick, by `lane`.
pub const LANE_CONSUMERS: &str = "herald_lane_consumers";
/// The scheduler's estimate of how fast workers drain a lane, by `lane`.
pub const LANE_DRAIN_RATE: &str = "herald_lane_drain_rate_messages_per_second";
/// How long the workers take to drain the lane's current depth at that rate, by `lane`.
pub const LANE_DRAIN: &str = "herald_lane_drain_seconds";
/// Duration of each scheduler tick (the leader's).
pub const TICK_DURATION: &str = "herald_scheduler_tick_duration_seconds";
/// Duration of each part of a dispatch (ticks, top-ups and wakes), by `phase`: `sweep`
/// (ticks only), `measure`, `claim`, `publish`.
pub const TICK_PHASE_DURATION: &str = "herald_scheduler_tick_phase_duration_seconds";
/// Recipients claimed per campaign batch.
pub const BATCH_SIZE: &str = "herald_scheduler_batch_size_recipients";
/// Recipients claimed for dispatch.
pub const CLAIMED: &str = "herald_scheduler_claimed_total";
/// Progress-counter deltas folded from the ledger into the counters (the leader's).
pub const COUNTER_DELTAS_FOLDED: &str = "herald_scheduler_counter_deltas_folded_total";
/// How long each fold of the counter ledger took.
pub const COUNTER_FOLD_DURATION: &str = "herald_scheduler_counter_fold_duration_seconds";
/// Duration of the leader's housekeeping steps beside the ticks, by `step`:
/// `lease_recovery` (recipients whose lease ran out), `completion` (finished campaigns),
/// `settling` (cancelled campaigns with nothing left to end) and `erasures` (messages in
/// flight at their address's erasure, erased once ended).
pub const HOUSEKEEPING_DURATION: &str = "herald_scheduler_housekeeping_duration_seconds";
/// Lanes topped up at once for newly accepted transactional messages (the fast path).
pub const WAKES: &str = "herald_scheduler_wakes_total";
/// 1 on the leader scheduler, 0 on a standby.
pub const LEADER: &str = "herald_scheduler_leader";
/// From a campaign's start (the start request, or its scheduled time) to its first send.
pub const TIME_TO_FIRST_SEND: &str = "herald_campaign_time_to_first_send_seconds";
/// The backlog: recipients of running campaigns not yet sent (waiting or in a lane), by
/// `provider` (a campaign's primary). What worker autoscaling follows.
pub const RECIPIENTS_DUE: &str = "herald_recipients_due";
/// The same backlog, by `tenant`.
pub const TENANT_RECIPIENTS_DUE: &str = "herald_tenant_recipients_due";
/// Each of the worker's batched writes that committed, by `write`: `lease` (the attempts
/// begun) and `outcome` (the outcomes recorded); from its first try, a database outage's
/// wait included.
pub const WORKER_WRITE_DURATION: &str = "herald_worker_write_duration_seconds";
/// Recipients per batched write of the worker, by `write` (as above).
pub const WORKER_WRITE_BATCH: &str = "herald_worker_write_batch_recipients";
/// Where a recipient's time goes in the worker, by `step`: `room` (until it has room under
/// its provider's in-flight cap), `lease` (until its lease is written; its message is acked
/// once all its recipients are leased), `request` (a send slot if the provider is
/// rate-limited, then the provider's answer) and `outcome` (until its outcome is written).
pub const WORKER_DELIVERY_STEP: &str = "herald_worker_delivery_step_seconds";
/// HTTP requests served (admin API, receipt receiver), by `route` and `status`.
pub const HTTP_REQUESTS: &str = "herald_http_requests_total";
/// HTTP requests' duration, by `route`.
pub const HTTP_REQUEST_DURATION: &str = "herald_http_request_duration_seconds";
/// HTTP requests refused before they were handled, by `reason`: `head_timeout` (a new
/// connection sent no complete request head in time and was closed), `body_timeout` (408),
/// `busy` (503: as many requests as allowed were being handled).
pub const HTTP_REFUSED: &str = "herald_http_refused_total";
/// 1 while the process answers `/readyz` 200 (a standby scheduler included), 0 otherwise:
/// what an alert on readiness reads (Prometheus scrapes `/metrics`, not `/readyz`).
pub const READY: &str = "herald_ready";

const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const RECIPIENT_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static CAMPAIGN_LABELS: AtomicBool = AtomicBool::new(false);

/// Installs the process-wide recorder (once; later calls return the same handle).
pub fn install(campaign_labels: bool) -> Result<PrometheusHandle, String> {
    CAMPAIGN_LABELS.store(campaign_labels, Ordering::Relaxed);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), RECIPIENT_BUCKETS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(WORKER_WRITE_BATCH.into()), RECIPIENT_BUCKETS)
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Records campaigns' times to first send, in seconds. Whichever statement sets a campaign's
/// first send calls this (the worker's outcome, or a receipt that came before it), so each
/// campaign is observed once.
pub fn first_sends(seconds: impl IntoIterator<Item = f64>) {
    for seconds in seconds {
        metrics::histogram!(TIME_TO_FIRST_SEND).record(seconds.max(0.0));
    }
}

/// Whether messages carry a `campaign` label.
pub fn campaign_labels() -> bool {
    CAMPAIGN_LABELS.load(Ordering::Relaxed)
}

/// Counts one message's outcome.
pub fn message(
    tenant: &uuid::Uuid,
    campaign: &uuid::Uuid,
    provider: &uuid::Uuid,
    outcome: &'static str,
) {
    let mut labels = vec![
        ("tenant", tenant.to_string()),
        ("provider", provider.to_string()),
        ("outcome", outcome.to_owned()),
    ];
    if campaign_labels() {
        labels.push(("campaign", campaign.to_string()));
    }
    metrics::counter!(MESSAGES, &labels).increment(1);
}

fn describe() {
    describe_counter!(
        MESSAGES,
        Unit::Count,
        "Messages by outcome (sent, failed, retried, throttled, deferred, expired, unknown, suppressed)"
    );
    describe_counter!(
        WEBHOOK_POSTS,
        Unit::Count,
        "Status events posted to tenants' webhooks, by outcome (delivered, failed, abandoned: given up a day old)"
    );
    describe_counter!(
        RECEIPTS,
        Unit::Count,
        "Delivery receipts stored, by provider and status"
    );
    describe_counter!(
        RECEIPTS_RESULTS,
        Unit::Count,
        "Receipts taken, by result (matched, parked, duplicate, unknown_number, numbers_past_limit, unreadable)"
    );
    describe_counter!(
        RECEIPTS_ORPHANED,
        Unit::Count,
        "Receipts that never matched a recipient (copies not counted)"
    );
    describe_counter!(
        RECEIPTS_REFUSED,
        Unit::Count,
        "Receipts refused (bad signature, malformed body)"
    );
    describe_counter!(
        CONSENTS,
        Unit::Count,
        "Recipients' STOP and START recorded, by said (stop, start); one older than the recipient's last recorded changes nothing"
    );
    describe_histogram!(
        PROVIDER_REQUEST_DURATION,
        Unit::Seconds,
        "Provider API requests' duration"
    );
    describe_gauge!(
        PROVIDER_IN_FLIGHT,
        Unit::Count,
        "Provider requests in flight in this worker"
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 while /readyz answers 200 (its checks pass and the process is not draining)"
    );
    describe_gauge!(
        BREAKER_OPEN,
        Unit::Count,
        "1 while the provider's circuit breaker is open"
    );
    describe_counter!(
        PACING_SLOTS,
        Unit::Count,
        "Send slots of rate-limited providers: reserved, late, missed, held_back, unchecked, failed"
    );
    describe_counter!(
        LANE_PUBLISHED,
        Unit::Count,
        "Recipients published (confirmed) into each provider's lane"
    );
    describe_gauge!(
        LANE_QUEUE_DEPTH,
        Unit::Count,
        "Messages ready in each lane's queue at the last tick (each a batch of recipients)"
    );
    describe_gauge!(
        LANE_CONSUMERS,
        Unit::Count,
        "Consumers of each lane's queue at the last tick"
    );
    describe_gauge!(
        LANE_DRAIN_RATE,
        Unit::CountPerSecond,
        "Estimated rate at which workers drain each lane"
    );
    describe_gauge!(
        LANE_DRAIN,
        Unit::Seconds,
        "Estimated time for workers to drain each lane's depth"
    );
    describe_histogram!(
        TICK_DURATION,
        Unit::Seconds,
        "Duration of the leader scheduler's ticks"
    );
    describe_histogram!(
        TICK_PHASE_DURATION,
        Unit::Seconds,
        "Duration of each phase of the scheduler's dispatches"
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Recipients claimed per campaign batch"
    );
    describe_counter!(CLAIMED, Unit::Count, "Recipients claimed for dispatch");
    describe_counter!(
        COUNTER_DELTAS_FOLDED,
        Unit::Count,
        "Progress-counter deltas folded from the ledger into the counters"
    );
    describe_histogram!(
        COUNTER_FOLD_DURATION,
        Unit::Seconds,
        "Duration of each fold of the progress counters' ledger"
    );
    describe_histogram!(
        HOUSEKEEPING_DURATION,
        Unit::Seconds,
        "Duration of the leader scheduler's housekeeping steps beside its ticks"
    );
    describe_counter!(
        WAKES,
        Unit::Count,
        "Dispatches run between ticks for newly accepted transactional messages"
    );
    describe_gauge!(
        LEADER,
        Unit::Count,
        "1 on the leader scheduler, 0 on a standby"
    );
    describe_histogram!(
        TIME_TO_FIRST_SEND,
        Unit::Seconds,
        "From a campaign's start request to its first send"
    );
    describe_gauge!(
        RECIPIENTS_DUE,
        Unit::Count,
        "Recipients of running campaigns not yet sent, by provider"
    );
    describe_gauge!(
        TENANT_RECIPIENTS_DUE,
        Unit::Count,
        "Recipients of running campaigns not yet sent, by tenant"
    );
    describe_histogram!(
        WORKER_WRITE_DURATION,
        Unit::Seconds,
        "Duration of the worker's batched writes (lease, outcome)"
    );
    describe_histogram!(
        WORKER_WRITE_BATCH,
        Unit::Count,
        "Recipients per batched write of the worker (lease, outcome)"
    );
    describe_histogram!(
        WORKER_DELIVERY_STEP,
        Unit::Seconds,
        "Time a delivery spends in each step in the worker (lease, request, outcome)"
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests served, by route and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP requests' duration, by route"
    );
    describe_counter!(
        HTTP_REFUSED,
        Unit::Count,
        "HTTP requests refused before they were handled: head_timeout, body_timeout, busy"
    );
}
