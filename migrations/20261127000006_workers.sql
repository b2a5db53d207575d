-- Live workers, each with a heartbeat. A provider's in-flight cap holds across the fleet:
-- every worker takes an equal share of it (cap / live workers) as the prefetch of that
-- provider's lane, so however many replicas run, their requests in flight add up to at
-- most the cap.
CREATE TABLE workers (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
