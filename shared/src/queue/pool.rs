//! A pool of connections to one RabbitMQ node, for publishers.
//!
//! deadpool's pool with a manager of our own: deadpool-lapin's connects with lapin's default
//! TLS settings, so a broker signed by a private CA (`HERALD_TLS_CA_FILE`) was out of reach.

use crate::config::Tls;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

pub type Pool = managed::Pool<NodeManager>;
pub type PooledConnection = managed::Object<NodeManager>;
pub type PoolError = managed::PoolError<lapin::Error>;

/// Opens and checks connections to one node.
pub struct NodeManager {
    url: crate::config::SecretUrl,
    service: String,
    tls: Tls,
}

impl std::fmt::Debug for NodeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeManager")
            .field("url", &self.url)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl managed::Manager for NodeManager {
    type Type = lapin::Connection;
    type Error = lapin::Error;

    async fn create(&self) -> Result<lapin::Connection, lapin::Error> {
        super::connect_node(self.url.expose(), &self.service, &self.tls).await
    }

    async fn recycle(
        &self,
        connection: &mut lapin::Connection,
        _: &Metrics,
    ) -> RecycleResult<lapin::Error> {
        if connection.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("the connection is closed"))
        }
    }
}

/// A pool of at most `size` connections to the node at `url`.
pub fn node_pool(
    url: &str,
    service: &str,
    tls: &Tls,
    size: usize,
) -> Result<Pool, managed::BuildError> {
    let manager = NodeManager {
        url: crate::config::SecretUrl::new(url),
        service: service.to_owned(),
        tls: tls.clone(),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
}
