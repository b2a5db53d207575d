//! Integration tests on real RabbitMQ, PostgreSQL and the provider simulator.
//! One binary, a module per capability; each test has its own database and vhost.

mod adapters;
mod admin_api;
mod admin_control;
mod bench_tools;
mod breaker;
mod cli;
mod config;
mod counters;
mod credentials;
mod dispatch;
mod egress;
mod erasures;
mod failover;
mod fairness;
mod hostile;
mod isolation;
mod keys;
mod messages;
mod misconfiguration;
mod ops;
mod receipts;
mod retries;
mod send_rules;
mod suppressions;
mod web;
mod webhooks;
