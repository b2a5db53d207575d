//! Recording of every answered request and the `/control/stats` and `/control/requests`
//! reports.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

use crate::behaviour::{KeyHistory, Outcome};
use crate::rate_limit::SlidingLog;

/// How many seconds with traffic `per_second` keeps.
pub const PER_SECOND_KEPT: usize = 3_600;
/// How many keys `duplicate_keys` lists at most.
pub const DUPLICATE_KEYS_KEPT: usize = 100;
/// How many answers are kept in one key's history (later ones are still counted).
pub const KEY_HISTORY_KEPT: usize = 10_000;
/// How many of the latest requests keep their [`RequestDetail`] (a benchmark's million
/// requests must not keep a million bodies).
pub const DETAILS_KEPT: usize = 10_000;

/// Unix milliseconds that never go backwards: the wall clock read once at start, advanced
/// by a monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ms: u64,
}

impl Clock {
    pub fn new() -> Self {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            base: Instant::now(),
            base_unix_ms,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_unix_ms + self.base.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters for one tenant or campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    pub requests: u64,
    pub accepted: u64,
    pub first_request_ms: u64,
    pub last_request_ms: u64,
}

/// Counters for one second (unix seconds) that had traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SecondStats {
    pub second: u64,
    pub requests: u64,
    pub accepted: u64,
}

/// One answer given for an idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyEvent {
    pub arrived_ms: u64,
    pub status: u16,
    /// What was received, for the latest [`DETAILS_KEPT`] requests.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<RequestDetail>>,
}

/// A request as received, so tests can check exactly what a client sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestDetail {
    /// `generic`, `twilio_messages`, `twilio_calls` or `whatsapp`.
    pub api: &'static str,
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    /// Lower-case names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The decoded body: the JSON document, or the form's fields (name → value, or a list
    /// of values for a repeated name); `null` when it could not be decoded.
    pub fields: serde_json::Value,
}

#[derive(Debug, Default)]
struct KeyState {
    requests: u64,
    history: Vec<KeyEvent>,
    accepted_id: Option<Uuid>,
    accepted_count: u64,
}

/// Where a request came from, as far as the statistics are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub arrived_ms: u64,
    pub tenant_id: Option<&'a str>,
    pub campaign_id: Option<&'a str>,
}

#[derive(Debug)]
pub struct Stats {
    started_ms: u64,
    requests: u64,
    by_status: Box<[u64; 600]>,
    accepted: u64,
    duplicates: u64,
    duplicate_keys: Vec<String>,
    per_tenant: HashMap<String, GroupStats>,
    per_campaign: HashMap<String, GroupStats>,
    per_second: VecDeque<SecondStats>,
    last_second: SlidingLog,
    max_in_1s: u64,
    in_flight: u64,
    max_in_flight: u64,
    answers_lost: u64,
    receipts: ReceiptStats,
    lookups: LookupStats,
    calls_live: u64,
    max_calls_live: u64,
    keys: HashMap<String, KeyState>,
    /// Which key events hold a detail, oldest first: (key, index in its history).
    details: VecDeque<(String, usize)>,
}

/// What became of the receipts posted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReceiptStats {
    /// Answered 2xx.
    pub accepted: u64,
    /// Answered 4xx (a bad signature, say): not sent again.
    pub refused: u64,
    /// Posts that failed and were tried again.
    pub retried: u64,
    /// Given up on after the last attempt.
    pub failed: u64,
}

/// Twilio's list endpoints (what Herald looks a lost answer up with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LookupStats {
    /// Answered with a list (or an error other than the rate limit's).
    pub answered: u64,
    /// Answered 429: over the rate limit, which lists share with sends.
    pub throttled: u64,
    /// Answered 503: the provider is down (`outage`), its lists with it.
    pub unavailable: u64,
}

/// How a list request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupAnswer {
    Listed,
    Throttled,
    Unavailable,
}

/// The `/control/stats` document.
#[derive(Debug, Serialize)]
pub struct StatsReport<'a> {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub accepted: u64,
    pub duplicates: u64,
    pub duplicate_keys: &'a [String],
    pub per_tenant: BTreeMap<&'a str, &'a GroupStats>,
    pub per_campaign: BTreeMap<&'a str, &'a GroupStats>,
    pub per_second: &'a VecDeque<SecondStats>,
    pub max_requests_in_any_1s_window: u64,
    /// Requests being answered now, and the most at any moment: what a client's in-flight
    /// cap is checked against.
    pub in_flight: u64,
    pub max_in_flight: u64,
    /// Requests taken whose answer was dropped (`lose_rate`).
    pub answers_lost: u64,
    pub receipts: ReceiptStats,
    pub lookups: LookupStats,
    /// Calls from their acceptance to their final status callback, now and at most.
    pub calls_live: u64,
    pub max_calls_live: u64,
    pub started_ms: u64,
}

fn bump_group(
    groups: &mut HashMap<String, GroupStats>,
    id: Option<&str>,
    arrived_ms: u64,
    accepted: bool,
) {
    let Some(id) = id else { return };
    let accepted = u64::from(accepted);
    if let Some(g) = groups.get_mut(id) {
        g.requests += 1;
        g.accepted += accepted;
        g.first_request_ms = g.first_request_ms.min(arrived_ms);
        g.last_request_ms = g.last_request_ms.max(arrived_ms);
    } else {
        groups.insert(
            id.to_owned(),
            GroupStats {
                requests: 1,
                accepted,
                first_request_ms: arrived_ms,
                last_request_ms: arrived_ms,
            },
        );
    }
}

impl Stats {
    /// A request is being answered (until [`answered`](Self::answered)).
    pub fn answering(&mut self) {
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    pub fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn answer_lost(&mut self) {
        self.answers_lost += 1;
    }

    pub fn lookup(&mut self, answer: LookupAnswer) {
        match answer {
            LookupAnswer::Listed => self.lookups.answered += 1,
            LookupAnswer::Throttled => self.lookups.throttled += 1,
            LookupAnswer::Unavailable => self.lookups.unavailable += 1,
        }
    }

    pub fn receipt(&mut self, result: crate::receipts::ReceiptResult) {
        use crate::receipts::ReceiptResult;
        let n = match result {
            ReceiptResult::Accepted => &mut self.receipts.accepted,
            ReceiptResult::Refused => &mut self.receipts.refused,
            ReceiptResult::Retried => &mut self.receipts.retried,
            ReceiptResult::Failed => &mut self.receipts.failed,
        };
        *n += 1;
    }

    pub fn call_started(&mut self) {
        self.calls_live += 1;
        self.max_calls_live = self.max_calls_live.max(self.calls_live);
    }

    pub fn call_ended(&mut self) {
        self.calls_live = self.calls_live.saturating_sub(1);
    }

    /// Empty statistics from `started_ms` on, still counting the requests being answered.
    pub fn restart(&self, started_ms: u64) -> Self {
        let mut fresh = Self::new(started_ms);
        fresh.in_flight = self.in_flight;
        fresh.max_in_flight = self.in_flight;
        fresh.calls_live = self.calls_live;
        fresh.max_calls_live = self.calls_live;
        fresh
    }

    pub fn new(started_ms: u64) -> Self {
        Self {
            started_ms,
            requests: 0,
            by_status: Box::new([0; 600]),
            accepted: 0,
            duplicates: 0,
            duplicate_keys: Vec::new(),
            per_tenant: HashMap::new(),
            per_campaign: HashMap::new(),
            per_second: VecDeque::new(),
            last_second: SlidingLog::new(),
            max_in_1s: 0,
            in_flight: 0,
            max_in_flight: 0,
            answers_lost: 0,
            receipts: ReceiptStats::default(),
            lookups: LookupStats::default(),
            calls_live: 0,
            max_calls_live: 0,
            keys: HashMap::new(),
            details: VecDeque::new(),
        }
    }

    /// Attaches what was received to the latest answer recorded for `key`, dropping the
    /// detail of the oldest request once [`DETAILS_KEPT`] are held.
    pub fn attach_detail(&mut self, key: &str, detail: RequestDetail) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        // A history that is full no longer records events, so there is nothing to attach to.
        if state.history.len() as u64 != state.requests {
            return;
        }
        let Some(last) = state.history.last_mut() else {
            return;
        };
        last.detail = Some(Box::new(detail));
        self.details
            .push_back((key.to_owned(), state.history.len() - 1));
        if self.details.len() > DETAILS_KEPT
            && let Some((old_key, index)) = self.details.pop_front()
            && let Some(event) = self
                .keys
                .get_mut(&old_key)
                .and_then(|k| k.history.get_mut(index))
        {
            event.detail = None;
        }
    }

    /// What the decision needs to know about `key`.
    pub fn key_history(&self, key: &str) -> KeyHistory {
        self.keys
            .get(key)
            .map_or_else(KeyHistory::default, |k| KeyHistory {
                prior_requests: k.requests,
                accepted: k.accepted_id.is_some(),
            })
    }

    /// How many messages each key was sent as (keys sent at least once): a second one is a
    /// duplicate the recipient received.
    pub fn accepted_counts(&self) -> BTreeMap<&str, u64> {
        self.keys
            .iter()
            .filter(|(_, k)| k.accepted_count > 0)
            .map(|(key, k)| (key.as_str(), k.accepted_count))
            .collect()
    }

    /// The answers given for `key`, in arrival order.
    pub fn key_events(&self, key: &str) -> &[KeyEvent] {
        self.keys.get(key).map_or(&[], |k| &k.history)
    }

    /// Records one decided request. For a success, returns the message id to answer with:
    /// a new one from `new_id` for [`Outcome::Accepted`], the key's earlier one for
    /// [`Outcome::Duplicate`] (`None` for a duplicate without a key, which the decision
    /// never produces).
    #[cfg(test)]
    pub fn record(
        &mut self,
        arrival: &Arrival<'_>,
        key: Option<String>,
        outcome: Outcome,
        new_id: impl FnOnce() -> Uuid,
    ) -> Option<Uuid> {
        self.record_as(arrival, key, outcome, outcome.status(), new_id)
    }

    /// [`record`](Self::record) with the HTTP status the API answers the outcome with
    /// (Twilio answers a success 201, not 200).
    pub fn record_as(
        &mut self,
        arrival: &Arrival<'_>,
        key: Option<String>,
        outcome: Outcome,
        status: u16,
        new_id: impl FnOnce() -> Uuid,
    ) -> Option<Uuid> {
        let at = arrival.arrived_ms;
        let first_success = outcome == Outcome::Accepted;

        self.requests += 1;
        if let Some(n) = self.by_status.get_mut(usize::from(status)) {
            *n += 1;
        }
        if !matches!(outcome, Outcome::RateLimited { .. }) {
            let n = self.last_second.record(at, 1_000);
            self.max_in_1s = self.max_in_1s.max(n);
        }

        let second = at / 1_000;
        match self.per_second.back_mut() {
            Some(s) if s.second >= second => {
                s.requests += 1;
                s.accepted += u64::from(first_success);
            }
            _ => {
                if self.per_second.len() == PER_SECOND_KEPT {
                    self.per_second.pop_front();
                }
                self.per_second.push_back(SecondStats {
                    second,
                    requests: 1,
                    accepted: u64::from(first_success),
                });
            }
        }
        bump_group(&mut self.per_tenant, arrival.tenant_id, at, first_success);
        bump_group(
            &mut self.per_campaign,
            arrival.campaign_id,
            at,
            first_success,
        );

        let id = match outcome {
            Outcome::Accepted => {
                self.accepted += 1;
                Some(new_id())
            }
            Outcome::Duplicate => {
                self.duplicates += 1;
                None
            }
            _ => None,
        };

        let Some(key) = key else { return id };
        // Only a duplicate may need the key itself afterwards (for `duplicate_keys`).
        let key_copy = (outcome == Outcome::Duplicate
            && self.duplicate_keys.len() < DUPLICATE_KEYS_KEPT)
            .then(|| key.clone());
        let state = self.keys.entry(key).or_default();
        state.requests += 1;
        if state.history.len() < KEY_HISTORY_KEPT {
            state.history.push(KeyEvent {
                arrived_ms: at,
                status,
                detail: None,
            });
        }
        match outcome {
            Outcome::Accepted => {
                state.accepted_id = id;
                state.accepted_count = 1;
                id
            }
            Outcome::Duplicate => {
                state.accepted_count += 1;
                if state.accepted_count == 2
                    && let Some(key) = key_copy
                {
                    self.duplicate_keys.push(key);
                }
                // A duplicate is only decided for a key with an earlier success.
                state.accepted_id
            }
            _ => None,
        }
    }

    pub fn report(&self) -> StatsReport<'_> {
        StatsReport {
            requests: self.requests,
            by_status: self
                .by_status
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(status, n)| (status as u16, *n))
                .collect(),
            accepted: self.accepted,
            duplicates: self.duplicates,
            duplicate_keys: &self.duplicate_keys,
            per_tenant: self
                .per_tenant
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            per_campaign: self
                .per_campaign
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            per_second: &self.per_second,
            max_requests_in_any_1s_window: self.max_in_1s,
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            answers_lost: self.answers_lost,
            receipts: self.receipts,
            lookups: self.lookups,
            calls_live: self.calls_live,
            max_calls_live: self.max_calls_live,
            started_ms: self.started_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::InvalidNumber;
    use serde_json::json;

    fn arrival(ms: u64) -> Arrival<'static> {
        Arrival {
            arrived_ms: ms,
            tenant_id: Some("t1"),
            campaign_id: Some("c1"),
        }
    }

    fn id(n: u128) -> impl FnOnce() -> Uuid {
        move || Uuid::from_u128(n)
    }

    #[test]
    fn counts_accepts_duplicates_and_statuses() {
        let mut s = Stats::new(1_000);
        let k = || Some("k1".to_owned());
        assert_eq!(
            s.record(&arrival(1_000), k(), Outcome::ServerError, id(9)),
            None
        );
        assert_eq!(
            s.record(&arrival(1_100), k(), Outcome::Accepted, id(1)),
            Some(Uuid::from_u128(1))
        );
        assert_eq!(
            s.key_history("k1"),
            KeyHistory {
                prior_requests: 2,
                accepted: true
            }
        );
        // A duplicate answers with the first id, not a new one.
        assert_eq!(
            s.record(&arrival(1_200), k(), Outcome::Duplicate, id(2)),
            Some(Uuid::from_u128(1))
        );
        s.record(&arrival(1_300), k(), Outcome::Duplicate, id(3));
        s.record(&arrival(2_500), None, Outcome::Accepted, id(4));
        s.record(
            &arrival(2_600),
            None,
            Outcome::RateLimited {
                retry_after_secs: 1,
            },
            id(5),
        );
        s.record(
            &Arrival {
                arrived_ms: 2_700,
                tenant_id: None,
                campaign_id: None,
            },
            None,
            Outcome::InvalidNumber(InvalidNumber::NotE164),
            id(6),
        );

        let report = serde_json::to_value(s.report()).unwrap();
        assert_eq!(
            report,
            json!({
                "requests": 7,
                "by_status": {"200": 4, "400": 1, "429": 1, "500": 1},
                "accepted": 2,
                "duplicates": 2,
                "duplicate_keys": ["k1"],
                "per_tenant": {"t1": {"requests": 6, "accepted": 2, "first_request_ms": 1000, "last_request_ms": 2600}},
                "per_campaign": {"c1": {"requests": 6, "accepted": 2, "first_request_ms": 1000, "last_request_ms": 2600}},
                "per_second": [
                    {"second": 1, "requests": 4, "accepted": 1},
                    {"second": 2, "requests": 3, "accepted": 1}
                ],
                "max_requests_in_any_1s_window": 4,
                "in_flight": 0,
                "max_in_flight": 0,
                "answers_lost": 0,
                "receipts": {"accepted": 0, "refused": 0, "retried": 0, "failed": 0},
                "lookups": {"answered": 0, "throttled": 0, "unavailable": 0},
                "calls_live": 0,
                "max_calls_live": 0,
                "started_ms": 1000
            })
        );
        assert_eq!(
            s.key_events("k1"),
            &[
                KeyEvent {
                    arrived_ms: 1_000,
                    status: 500,
                    detail: None
                },
                KeyEvent {
                    arrived_ms: 1_100,
                    status: 200,
                    detail: None
                },
                KeyEvent {
                    arrived_ms: 1_200,
                    status: 200,
                    detail: None
                },
                KeyEvent {
                    arrived_ms: 1_300,
                    status: 200,
                    detail: None
                },
            ]
        );
        assert!(s.key_events("unknown").is_empty());
    }

    fn detail(n: u64) -> RequestDetail {
        RequestDetail {
            api: "generic",
            method: "POST".into(),
            path: format!("/v1/messages/{n}"),
            content_type: Some("application/json".into()),
            headers: BTreeMap::new(),
            fields: json!({"n": n}),
        }
    }

    #[test]
    fn details_are_kept_for_the_latest_requests_only() {
        let mut s = Stats::new(0);
        let total = DETAILS_KEPT as u64 + 2;
        for n in 0..total {
            let key = format!("k{}", n % 3);
            s.record(&arrival(n), Some(key.clone()), Outcome::ServerError, id(1));
            s.attach_detail(&key, detail(n));
        }
        s.attach_detail("unknown", detail(0));
        let kept: Vec<u64> = ["k0", "k1", "k2"]
            .iter()
            .flat_map(|k| s.key_events(k))
            .filter_map(|e| e.detail.as_ref())
            .filter_map(|d| d.fields["n"].as_u64())
            .collect();
        assert_eq!(kept.len(), DETAILS_KEPT);
        assert!(!kept.contains(&0) && !kept.contains(&1));
        let last = s
            .key_events(&format!("k{}", (total - 1) % 3))
            .last()
            .cloned();
        let shown = serde_json::to_value(last.unwrap()).unwrap();
        assert_eq!(shown["path"], json!(format!("/v1/messages/{}", total - 1)));
        assert_eq!(shown["status"], json!(500));
        let bare = serde_json::to_value(&s.key_events("k0")[0]).unwrap();
        assert_eq!(bare, json!({"arrived_ms": 0, "status": 500}));
    }

    #[test]
    fn max_window_ignores_rate_limited_requests() {
        let mut s = Stats::new(0);
        for t in 0..5 {
            s.record(&arrival(10_000 + t), None, Outcome::Accepted, id(1));
        }
        for t in 0..50 {
            let limited = Outcome::RateLimited {
                retry_after_secs: 1,
            };
            s.record(&arrival(10_100 + t), None, limited, id(1));
        }
        // Sliding: 10_999 still sees the first five, 11_000 drops them.
        s.record(&arrival(10_999), None, Outcome::ServerError, id(1));
        s.record(&arrival(11_000), None, Outcome::Accepted, id(1));
        assert_eq!(s.report().max_requests_in_any_1s_window, 6);
    }

    #[test]
    fn per_second_keeps_the_last_hour_of_busy_seconds() {
        let mut s = Stats::new(0);
        for sec in 0..(PER_SECOND_KEPT as u64 + 10) {
            s.record(&arrival(sec * 1_000), None, Outcome::Accepted, id(1));
        }
        let report = s.report();
        assert_eq!(report.per_second.len(), PER_SECOND_KEPT);
        assert_eq!(report.per_second.front().unwrap().second, 10);
    }

    #[test]
    fn duplicate_keys_are_capped() {
        let mut s = Stats::new(0);
        for n in 0..(DUPLICATE_KEYS_KEPT + 5) {
            let k = format!("k{n}");
            s.record(&arrival(1), Some(k.clone()), Outcome::Accepted, id(1));
            s.record(&arrival(2), Some(k.clone()), Outcome::Duplicate, id(2));
            s.record(&arrival(3), Some(k), Outcome::Duplicate, id(3));
        }
        let report = s.report();
        assert_eq!(report.duplicate_keys.len(), DUPLICATE_KEYS_KEPT);
        assert_eq!(report.duplicates, 2 * (DUPLICATE_KEYS_KEPT as u64 + 5));
    }

    #[test]
    fn clock_is_plausible_and_monotonic() {
        let c = Clock::new();
        let a = c.now_ms();
        let b = c.now_ms();
        assert!(b >= a);
        assert!(a > 1_600_000_000_000);
    }
}
