//! RabbitMQ: the topology Herald declares and the message it carries.
//!
//! RabbitMQ only carries work; PostgreSQL says what each recipient's state is. A message is a
//! claim ticket for one dispatch of one recipient (see [`message::DispatchMessage`]).

pub mod message;
pub mod pool;
pub mod topology;

use crate::config::Tls;
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};

/// The nodes of `urls` (one URL, or a cluster's, separated by commas), in the order this
/// process tries them: from one drawn at random, so a fleet spreads over the cluster (a
/// process id would not: in a container every service is process 1), moving on to the next
/// when a node does not answer.
pub fn nodes(urls: &str) -> Vec<&str> {
    let all: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if all.is_empty() {
        return all;
    }
    let start = rand::random_range(0..all.len());
    all[start..].iter().chain(&all[..start]).copied().collect()
}

/// Opens a connection to the first node of `urls` that answers, named after the service, so
/// `rabbitmqctl list_connections` tells them apart. `amqps://` nodes are reached over TLS,
/// trusting `tls`'s CA file besides the system's roots.
pub async fn connect(urls: &str, service: &str, tls: &Tls) -> Result<Connection, lapin::Error> {
    let mut nodes = nodes(urls);
    // The last node's error is the one reported (with no node at all, the URL's own).
    let last = nodes.pop().unwrap_or(urls);
    for url in nodes {
        match connect_node(url, service, tls).await {
            Ok(connection) => return Ok(connection),
            Err(error) => tracing::debug!(%error, "RabbitMQ node did not answer; trying the next"),
        }
    }
    connect_node(last, service, tls).await
}

/// The longest one node may take to accept a connection (TCP, TLS and AMQP's handshake: a
/// few milliseconds on a healthy network). A node behind a network that drops packets would
/// otherwise hold the attempt for as long as the kernel retries (about two minutes), neither
/// moving on to the next node nor letting the caller do anything meanwhile.
pub const NODE_CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest AMQP frame Herald offers the broker, unless a node's URL names its own
/// (`?frame_max=`). lapin keeps two ring buffers of 32 frames a connection, zero-filled as the
/// connection opens, so RabbitMQ's 128 KiB frames would hold 8 MiB resident on every
/// connection; 16 KiB holds 1 MiB. A message larger than a frame (a batch of many recipients)
/// travels in several, at 8 bytes of framing each.
pub const FRAME_MAX: u32 = 16 * 1024;

/// One node's connection.
pub async fn connect_node(url: &str, service: &str, tls: &Tls) -> Result<Connection, lapin::Error> {
    let properties =
        ConnectionProperties::default().with_connection_name(connection_name(service).into());
    let cert_chain = match &tls.ca_file {
        Some(path) => Some(std::fs::read_to_string(path)?),
        None => None,
    };
    let uri = node_uri(url)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let builder = DefaultConnectionBuilder::new()?
        .with_uri(uri)
        .with_properties(properties)
        .with_tls_config(OwnedTLSConfig {
            identity: None,
            cert_chain,
        });
    tokio::time::timeout(NODE_CONNECT_WITHIN, builder.connect())
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {NODE_CONNECT_WITHIN:?}"),
            )
        })?
}

/// A node's URL as Herald connects to it: with [`FRAME_MAX`] unless it names a `frame_max`.
fn node_uri(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url.parse()?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// The service, its host (a pod's or container's name: `HOSTNAME`) and its process id: in
/// containers the process id alone is 1 everywhere.
fn connection_name(service: &str) -> String {
    let pid = std::process::id();
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.trim().is_empty() => format!("{service}@{}:{pid}", host.trim()),
        _ => format!("{service}@{pid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_small_unless_the_url_says_otherwise() {
        let uri = node_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let uri = node_uri("amqps://h:5671/v?frame_max=131072&heartbeat=30").unwrap();
        assert_eq!(uri.query.frame_max, Some(131_072));
        assert_eq!(uri.query.heartbeat, Some(30));
        assert!(node_uri("http://not-amqp").is_err());
    }

    #[test]
    fn every_node_is_tried_once_from_a_random_start() {
        let all = ["amqp://a", "amqp://b", "amqp://c"];
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let tried = nodes("amqp://a, amqp://b,amqp://c");
            // In the cluster's order, from wherever it starts.
            let start = all.iter().position(|&n| n == tried[0]).unwrap();
            let expected: Vec<&str> = all[start..].iter().chain(&all[..start]).copied().collect();
            assert_eq!(tried, expected);
            firsts.insert(tried[0]);
        }
        // Processes do not all start at the same node (200 draws: all three, but for a
        // chance of about 1 in 10^35).
        assert_eq!(firsts.len(), 3);
        assert_eq!(nodes("amqp://only"), ["amqp://only"]);
        assert!(nodes(" , ").is_empty());
    }
}
