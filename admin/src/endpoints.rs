//! Where a tenant's provider or status webhook may send Herald's workers: public https
//! endpoints only.
//!
//! A tenant key could otherwise point a provider at `127.0.0.1`, the cloud's metadata
//! service (`169.254.169.254`) or anything else inside the network, and read parts of the
//! answers back in recipient errors. Operators' shared providers are trusted; the operator
//! may also allow tenants more networks (an internal gateway; loopback for the demo and the
//! tests) with `HERALD_PROVIDER_ALLOWED_NETWORKS`, where plain http is then allowed too.

use herald_shared::public_address::{Networks, is_public};
use std::net::IpAddr;
use std::time::Duration;

/// How long the endpoint's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an endpoint is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The endpoint itself is wrong (the caller's to fix): the reason.
    Invalid(String),
    /// Its host could not be resolved now (the name servers slow or failing): whether it is
    /// allowed cannot be told; the caller may try again.
    Unresolved(String),
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Self::Invalid(reason.to_owned())
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Self::Invalid(reason)
    }
}

/// Whether a failed lookup says the name does not exist (the resolver answered so), as
/// opposed to the resolver failing to answer (a temporary failure, a server failure). std
/// reports the resolver's answer only as text (getaddrinfo's messages on glibc and musl).
fn no_such_name(error: &std::io::Error) -> bool {
    let text = error.to_string();
    [
        "Name or service not known",
        "No address associated with hostname",
        "Name does not resolve",
        "nodename nor servname provided",
    ]
    .iter()
    .any(|answer| text.contains(answer))
}

/// The operator's extra networks.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    pub allowed: Networks,
}

impl EndpointPolicy {
    fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.contains(ip)
    }

    /// Checks a tenant's endpoint: https, no credentials in it, and every address its host
    /// resolves to public (or in the operator's networks, where http is allowed too).
    pub async fn check(&self, endpoint: &str) -> Result<(), Refusal> {
        let url = url::Url::parse(endpoint).map_err(|e| format!("not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not carry a user or password (a provider's secrets go in its `credentials`)"
                    .into(),
            );
        }
        let host = url.host_str().ok_or("must name a host")?.to_owned();
        let port = url.port_or_known_default().ok_or("must have a port")?;
        let addresses: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            _ => tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| Refusal::Unresolved(format!("`{host}` did not resolve in time")))?
            .map_err(|error| {
                if no_such_name(&error) {
                    Refusal::Invalid(format!("`{host}` does not resolve"))
                } else {
                    Refusal::Unresolved(format!("`{host}` could not be resolved now: {error}"))
                }
            })?
            .map(|socket| socket.ip())
            .collect(),
        };
        if addresses.is_empty() {
            return Err(Refusal::Invalid(format!("`{host}` does not resolve")));
        }
        let all_allowed = addresses.iter().all(|ip| self.allows(*ip));
        if let Some(inside) = addresses
            .iter()
            .find(|ip| !is_public(**ip) && !self.allows(**ip))
        {
            return Err(Refusal::Invalid(format!(
                "`{host}` is {inside}, not a public address: tenants' providers and webhooks reach the internet only"
            )));
        }
        if url.scheme() != "https" && !all_allowed {
            return Err("must be https".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tenant_endpoints_are_public_https_without_credentials() {
        let strict = EndpointPolicy::default();
        assert!(strict.check("https://8.8.8.8/send").await.is_ok());
        for (endpoint, why) in [
            ("http://8.8.8.8/send", "https"),
            ("https://127.0.0.1/send", "public"),
            ("https://localhost:9090/send", "public"),
            ("http://169.254.169.254/latest/meta-data", "public"),
            ("https://[::1]/send", "public"),
            ("https://user:pass@8.8.8.8/send", "password"),
        ] {
            let error = strict.check(endpoint).await.unwrap_err();
            assert!(
                matches!(&error, Refusal::Invalid(reason) if reason.contains(why)),
                "{endpoint}: {error:?}"
            );
        }
        let loopback = EndpointPolicy {
            allowed: herald_shared::public_address::parse_networks("127.0.0.0/8, ::1/128").unwrap(),
        };
        assert!(loopback.check("http://127.0.0.1:9090/send").await.is_ok());
        assert!(loopback.check("http://169.254.169.254/").await.is_err());
    }

    #[test]
    fn only_a_resolvers_answer_that_there_is_no_such_name_is_the_callers_mistake() {
        let failed = |text: &str| {
            std::io::Error::other(format!("failed to lookup address information: {text}"))
        };
        assert!(no_such_name(&failed("Name or service not known")));
        assert!(no_such_name(&failed("No address associated with hostname")));
        assert!(!no_such_name(&failed(
            "Temporary failure in name resolution"
        )));
        assert!(!no_such_name(&failed(
            "Non-recoverable failure in name resolution"
        )));
    }
}
