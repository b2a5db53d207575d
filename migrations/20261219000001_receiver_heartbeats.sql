-- Each receiver's last sign of life, written every few seconds. A receiver's start counts
-- as a refusal of the providers that cannot be asked about a message (their webhooks went
-- unanswered while no receiver listened) only when no other receiver was alive across it:
-- in a rolling deployment, or with one replica restarting, the others answered meanwhile.
-- Rows not renewed for an hour are removed by the receivers.
CREATE TABLE receiver_heartbeats (
    id       uuid PRIMARY KEY,
    alive_at timestamptz NOT NULL
);
