//! Where provider requests may go. Operators' shared providers are trusted; a tenant's
//! provider reaches only public addresses and the operator's allowed networks
//! (`HERALD_PROVIDER_ALLOWED_NETWORKS`), checked on every connection, not only when the admin
//! took the endpoint: a name whose DNS record is switched afterwards to `127.0.0.1` or the
//! cloud's metadata service still cannot lead inside. No client follows redirects.
//!
//! Such a request is refused before any byte is sent, as a misconfigured provider (its
//! campaign pauses with the reason), never as a provider that is down.

use crate::outcome::CallResult;
use crate::providers::Provider;
use herald_shared::public_address::Networks;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The HTTP clients provider requests leave through.
#[derive(Clone)]
pub struct Egress {
    /// For operators' providers.
    open: reqwest::Client,
    /// For tenants' providers: resolves names to reachable addresses only.
    restricted: reqwest::Client,
    allowed: Arc<Networks>,
}

/// Why a tenant's provider or webhook was not connected to.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{host}` is {address}, not a public address: tenants' providers and webhooks reach the internet only"
)]
pub struct InsideAddress {
    host: String,
    address: IpAddr,
}

/// The builder of every client provider requests leave through, keeping up to
/// `idle_per_host` connections to a provider open between requests.
pub fn client_builder(idle_per_host: usize, connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .pool_max_idle_per_host(idle_per_host)
        .tcp_nodelay(true)
        // A connection still being made sent nothing: failing it as a connection error
        // (not sent) rather than at the request's timeout (possibly sent) spares the
        // lookups, or the wait for a receipt that never comes, of a provider whose host
        // drops connection attempts.
        .connect_timeout(connect_timeout)
        // A proxy from the environment (`HTTPS_PROXY`) would resolve the provider's name
        // itself, past the check of a tenant's provider's addresses.
        .no_proxy()
        // A provider API answers where it was asked; following a redirect could take a
        // request (and its credentials) anywhere, inside the network included.
        .redirect(reqwest::redirect::Policy::none())
        // A provider's create request is no idempotent one: whether to send it again is
        // Herald's decision (receipts, lookups), never the client's. reqwest's default
        // policy would retry HTTP/2 refusals, and to be able to, copies every request's
        // headers before sending it; with no retries allowed it keeps no copy.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
}

impl Egress {
    /// Both clients from `builder` (which must not follow redirects), built on the calling
    /// runtime (a connection belongs to the runtime that opened it).
    pub fn build(
        builder: impl Fn() -> reqwest::ClientBuilder,
        allowed: Networks,
    ) -> reqwest::Result<Self> {
        let allowed = Arc::new(allowed);
        Ok(Self {
            open: builder().build()?,
            restricted: builder()
                .dns_resolver(Arc::new(Reachable {
                    allowed: allowed.clone(),
                }))
                .build()?,
            allowed,
        })
    }

    /// The client for `provider`'s request to `url`; a refusal if `provider` is a tenant's and
    /// `url` names an address it may not reach (addresses in URLs skip the resolver).
    pub fn client(
        &self,
        provider: &Provider,
        url: &url::Url,
    ) -> Result<&reqwest::Client, CallResult> {
        if !provider.restricted {
            return Ok(&self.open);
        }
        self.for_tenant(url)
            .map_err(|inside| CallResult::Misconfigured {
                reason: inside.to_string(),
            })
    }

    /// The client for a request to `url` that a tenant chose (its provider's, its webhook's);
    /// a refusal if `url` names an address tenants may not reach.
    pub fn for_tenant(&self, url: &url::Url) -> Result<&reqwest::Client, InsideAddress> {
        let address = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        match address {
            Some(address) if !self.allowed.reachable(address) => Err(InsideAddress {
                host: address.to_string(),
                address,
            }),
            _ => Ok(&self.restricted),
        }
    }
}

/// What a failed request means if the resolver refused it: the refusal's text.
pub fn refusal(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(inside) = error.downcast_ref::<InsideAddress>() {
            return Some(inside.to_string());
        }
        source = error.source();
    }
    None
}

/// A resolver that answers only with addresses a tenant's provider may reach, and refuses
/// a name with any other among its addresses (so no fallback can lead inside).
struct Reachable {
    allowed: Arc<Networks>,
}

impl Resolve for Reachable {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(inside) = addresses.iter().find(|a| !allowed.reachable(a.ip())) {
                return Err(Box::new(InsideAddress {
                    host,
                    address: inside.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused_before_connecting() {
        let strict = Reachable {
            allowed: Arc::new(Networks::default()),
        };
        let refused = strict.resolve("localhost".parse().unwrap()).await;
        let Err(error) = refused else {
            panic!("localhost resolved for a tenant's provider")
        };
        assert!(
            error.to_string().contains("not a public address"),
            "{error}"
        );
        let loopback = Reachable {
            allowed: Arc::new(
                herald_shared::public_address::parse_networks("127.0.0.0/8, ::1/128").unwrap(),
            ),
        };
        assert!(loopback.resolve("localhost".parse().unwrap()).await.is_ok());
    }

    #[tokio::test]
    async fn a_connection_that_hangs_fails_as_not_made_before_the_requests_timeout() {
        // A peer that takes the TCP connection and never answers the TLS handshake: the
        // request's bytes were never sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let client = client_builder(1, Duration::from_millis(200))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let error = client
            .post(format!("https://127.0.0.1:{port}/send"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        held.abort();
    }
}
