//! `herald probe URL`: a health check for containers, which carry no curl.

use std::time::Duration;

use reqwest::Url;

use super::CliError;

const TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(url: &Url) -> Result<(), CliError> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| CliError::Unhealthy(e.to_string()))?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| CliError::Unhealthy(format!("{url}: {}", e.without_url())))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        super::write_stdout(&format!("{status} {body}\n"))
    } else {
        Err(CliError::Unhealthy(format!(
            "{url} answered {status}: {body}"
        )))
    }
}
