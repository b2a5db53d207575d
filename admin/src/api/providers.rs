//! Providers. Credentials are write-only: stored, used by the workers, never returned or
//! logged (the response only says whether there are any).

use super::JsonBody;
use crate::auth::Caller;
use crate::error::{ApiError, FieldError, from_constraint};
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Provider {
    pub id: Uuid,
    /// `null`: an operator-owned provider every tenant may use.
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub kind: String,
    pub endpoint: String,
    pub has_credentials: bool,
    pub timeout_ms: i32,
    pub max_in_flight: i32,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    pub retry_max_ms: i32,
    pub created_at: DateTime<Utc>,
}

// Debug is written by hand below so that credentials never reach a log line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Operators only; omitted = a shared provider. Ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    pub name: String,
    #[serde(default = "http")]
    pub kind: String,
    pub endpoint: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: i32,
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: i32,
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: i32,
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: i32,
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: i32,
}

impl std::fmt::Debug for NewProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("credentials", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn http() -> String {
    "http".to_owned()
}

mod defaults {
    pub fn timeout_ms() -> i32 {
        10_000
    }
    pub fn max_in_flight() -> i32 {
        100
    }
    pub fn max_attempts() -> i32 {
        5
    }
    pub fn retry_base_ms() -> i32 {
        1_000
    }
    pub fn retry_max_ms() -> i32 {
        300_000
    }
}

fn check(body: &NewProvider) -> Vec<FieldError> {
    let mut fields = Vec::new();
    let mut bad = |field: &str, reason: String| {
        fields.push(FieldError {
            field: field.to_owned(),
            reason,
        })
    };
    if let Err(reason) = validate::name(&body.name) {
        bad("name", reason);
    }
    if body.kind != "http" {
        bad(
            "kind",
            format!("unknown provider kind `{}`; known: http", body.kind),
        );
    }
    if let Err(reason) = validate::endpoint(&body.endpoint) {
        bad("endpoint", reason);
    }
    let ranges = [
        ("timeout_ms", body.timeout_ms, 10, 300_000),
        ("max_in_flight", body.max_in_flight, 1, 100_000),
        ("max_attempts", body.max_attempts, 1, 100),
        ("retry_base_ms", body.retry_base_ms, 1, 86_400_000),
        ("retry_max_ms", body.retry_max_ms, 1, 86_400_000),
    ];
    for (field, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            bad(field, format!("must be between {min} and {max}"));
        }
    }
    fields
}

const COLUMNS: &str =
    "id, tenant_id, name, kind, endpoint, credentials <> '{}'::jsonb AS has_credentials,
     timeout_ms, max_in_flight, max_attempts, retry_base_ms, retry_max_ms, created_at";

#[utoipa::path(post, path = "/providers", tag = "providers", request_body = NewProvider,
    responses((status = 201, body = Provider), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewProvider>,
) -> Result<(StatusCode, Json<Provider>), ApiError> {
    let fields = check(&body);
    if !fields.is_empty() {
        return Err(ApiError::fields("provider", fields));
    }
    let tenant = match caller {
        Caller::Tenant(id) => Some(id),
        Caller::Operator => body.tenant_id,
    };
    let provider: Provider = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO providers (tenant_id, name, kind, endpoint, credentials, timeout_ms, max_in_flight,
                                max_attempts, retry_base_ms, retry_max_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(body.name.trim())
    .bind(&body.kind)
    .bind(&body.endpoint)
    .bind(Value::Object(body.credentials))
    .bind(body.timeout_ms)
    .bind(body.max_in_flight)
    .bind(body.max_attempts)
    .bind(body.retry_base_ms)
    .bind(body.retry_max_ms)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| from_constraint(e, "provider"))?;
    tracing::info!(provider_id = %provider.id, tenant_id = ?tenant, "provider created");
    Ok((StatusCode::CREATED, Json(provider)))
}

#[utoipa::path(get, path = "/providers", tag = "providers", responses((status = 200, body = Vec<Provider>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Provider>>, ApiError> {
    let providers = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM providers
         WHERE $1::uuid IS NULL OR tenant_id = $1 OR tenant_id IS NULL ORDER BY name"
    )))
    .bind(caller.scope())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(providers))
}

#[utoipa::path(get, path = "/providers/{id}", tag = "providers",
    responses((status = 200, body = Provider), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Provider>, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM providers
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2 OR tenant_id IS NULL)"
    )))
    .bind(id)
    .bind(caller.scope())
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("provider"))
}
