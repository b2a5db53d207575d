//! The HTTP call to a provider: the adapter of the provider's kind builds the request and
//! reads the answer ([`crate::adapters`]); this module only does the I/O, with the
//! provider's timeout, and says what a transport failure means: a connection that could
//! not be made sent nothing ([`CallResult::Unavailable`]); a timeout or a connection lost
//! once the request was on its way may have been sent ([`CallResult::Unknown`]).

use crate::adapters::{self, Answer, HttpRequest};
use crate::egress::{self, Egress};
use crate::outcome::CallResult;
use crate::providers::Provider;
use herald_shared::ops::metrics as metrics_names;
use herald_shared::queue::message::DispatchMessage;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

pub async fn send(egress: &Egress, provider: &Provider, message: &DispatchMessage) -> CallResult {
    let span = tracing::debug_span!(
        "provider_call",
        provider_id = %provider.id,
        kind = %provider.config.kind(),
    );
    let label = provider.id.to_string();
    let in_flight = metrics::gauge!(metrics_names::PROVIDER_IN_FLIGHT, "provider" => label.clone());
    in_flight.increment(1.0);
    // Decremented however the call ends (a dropped future included).
    let _in_flight = scopeguard::guard((), move |()| in_flight.decrement(1.0));
    let started = std::time::Instant::now();
    let result = tracing::Instrument::instrument(call(egress, provider, message), span).await;
    metrics::histogram!(metrics_names::PROVIDER_REQUEST_DURATION, "provider" => label)
        .record(started.elapsed().as_secs_f64());
    result
}

async fn call(egress: &Egress, provider: &Provider, message: &DispatchMessage) -> CallResult {
    let request = match adapters::build(&provider.config, message, provider.callback_url.as_deref())
    {
        Ok(request) => request,
        Err(result) => return result,
    };
    let headers = match header_map(&request) {
        Ok(headers) => headers,
        // Settings are validated when loaded, so this is a bug rather than bad input.
        Err(reason) => return CallResult::Misconfigured { reason },
    };
    // Parsed once, for the egress check of a tenant's provider and the request alike: a
    // parse is a few percent of a worker's CPU at 0 ms (`perf`).
    let url = match url::Url::parse(&request.url) {
        Ok(url) => url,
        Err(error) => {
            return CallResult::Misconfigured {
                reason: format!("cannot build the request: the URL is not valid: {error}"),
            };
        }
    };
    let client = match egress.client(provider, &url) {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let response = match client
        .request(request.method, url)
        .timeout(provider.timeout)
        .headers(headers)
        .body(request.body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return failed(&error, provider),
    };
    let status = response.status().as_u16();
    if (300..400).contains(&status) {
        // Redirects are not followed (see `egress`): the provider's endpoint is not its API's.
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "elsewhere".to_owned());
        let reason = format!(
            "the provider answered a redirect (HTTP {status} to {to}); Herald does not \
             follow redirects: give the provider the URL its API answers at"
        );
        // 307 and 308 ask for the same request elsewhere: nothing was taken here.
        return if matches!(status, 307 | 308) {
            CallResult::Misconfigured { reason }
        } else {
            CallResult::Redirected { reason }
        };
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| adapters::parse_retry_after(v, chrono::Utc::now()));
    // The status has come: it decides, even if the body is cut off (a 2xx without its body
    // still means the provider took the request, just without telling its id).
    let body = match read_body(response, ANSWER_LIMIT).await {
        Ok(body) => body,
        Err(error) => {
            tracing::debug!(status, error = %without_url(&error), "answer's body lost");
            Default::default()
        }
    };
    adapters::interpret(
        &provider.config,
        &Answer {
            status,
            retry_after,
            body: &body,
        },
    )
}

/// The most of a send's answer read: an answer is a few hundred bytes of JSON, and with
/// thousands of requests in flight a provider (a tenant's own endpoint) answering megabytes
/// would take the worker's memory; what is past this is not read.
pub const ANSWER_LIMIT: usize = 64 * 1024;

/// A response's body, at most `limit` bytes of it (the rest is dropped with the connection).
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// What a request that got no answer means.
pub fn failed(error: &reqwest::Error, provider: &Provider) -> CallResult {
    // A tenant's provider whose name resolves inside the network: nothing was sent, and no
    // retry will change that until its endpoint does.
    if let Some(reason) = egress::refusal(error) {
        return CallResult::Misconfigured { reason };
    }
    if error.is_connect() {
        // Refused, unreachable, DNS or TLS failure: no byte of the request reached the provider.
        return CallResult::Unavailable {
            reason: format!("cannot connect: {}", without_url(error)),
            retry_after: None,
        };
    }
    if error.is_builder() {
        return CallResult::Misconfigured {
            reason: format!("cannot build the request: {}", without_url(error)),
        };
    }
    let reason = if error.is_timeout() {
        format!("no answer within {:?}", provider.timeout)
    } else {
        format!("connection lost before the answer: {}", without_url(error))
    };
    CallResult::Unknown {
        reason,
        retry_after: None,
    }
}

/// The request's headers for reqwest, secrets marked sensitive (kept out of its `Debug`).
/// Errors name the header, never its value.
pub(crate) fn header_map(request: &HttpRequest) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(request.headers.len());
    for header in &request.headers {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", header.name))?;
        let mut value = HeaderValue::from_str(&header.value)
            .map_err(|_| format!("invalid value for header {:?}", header.name))?;
        value.set_sensitive(header.sensitive);
        map.append(name, value);
    }
    Ok(map)
}

/// reqwest errors print the URL, which may carry credentials in query strings.
pub(crate) fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s.to_string());
        source = s.source();
    }
    deepest.unwrap_or_else(|| "connection error".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::Header;

    #[test]
    fn secret_headers_are_sensitive_and_bad_ones_are_named_not_shown() {
        let request = HttpRequest::post(
            "http://x".into(),
            vec![
                Header::secret("Authorization", "Bearer t"),
                Header::new("X-A", "1"),
            ],
            Vec::new(),
        );
        let map = header_map(&request).unwrap();
        assert!(map["authorization"].is_sensitive());
        assert!(!map["x-a"].is_sensitive());
        let bad = HttpRequest::post(
            "http://x".into(),
            vec![Header::secret("X-Key", "line\nbreak s3cr3t")],
            Vec::new(),
        );
        let error = header_map(&bad).unwrap_err();
        assert_eq!(error, r#"invalid value for header "X-Key""#);
    }
}
