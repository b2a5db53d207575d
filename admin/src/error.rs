//! The API's errors: every failure is a JSON body naming what was wrong, with a 4xx status
//! for the caller's mistakes and 5xx only for ours.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_shared::db::is_transient;
use serde::Serialize;
use utoipa::ToSchema;

/// A field of the request and what is wrong with it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// A row of an upload and what is wrong with it (rows count from 1, after any header).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct RowError {
    pub row: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Vec<FieldError>,
    },
    #[error("{message}")]
    InvalidRows {
        message: String,
        rows: Vec<RowError>,
        error_rows: u64,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A body, row or value past its size limit (`crate::limits`).
    #[error("{0}")]
    TooLarge(String),
    /// The client stopped sending its body.
    #[error("{0}")]
    Timeout(String),
    /// Something the request needs is out of reach for now (the database, the name
    /// servers); try again.
    #[error("{0}")]
    Unavailable(String),
    /// Too many uploads at once, from this key or in all; try again after `retry_after` s.
    #[error("{message}")]
    Busy { message: String, retry_after: u32 },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl ApiError {
    /// One invalid field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            message: format!("invalid `{field}`"),
            fields: vec![FieldError {
                field: field.to_owned(),
                reason: reason.into(),
            }],
        }
    }

    /// Several invalid fields of one object.
    pub fn fields(what: &str, fields: Vec<FieldError>) -> Self {
        Self::Invalid {
            message: format!("invalid {what}"),
            fields,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid { .. } | Self::InvalidRows { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Db(error) => match db_class(error) {
                DbClass::BadValue => StatusCode::UNPROCESSABLE_ENTITY,
                DbClass::TooSlow | DbClass::Unreachable | DbClass::NoConnection => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                DbClass::Other => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub status: u16,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<RowError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rows: Option<u64>,
}

/// What a database error says about the request.
enum DbClass {
    /// A value the checks let through but PostgreSQL refused (SQLSTATE class 22: out of
    /// range, invalid encoding): the caller's input, so a 4xx, never a 500.
    BadValue,
    /// Cancelled by `statement_timeout` or a lock wait, or rolled back as a deadlock's or a
    /// serialization failure's victim (nothing written): the server is busy, try again.
    TooSlow,
    /// The database could not be reached, broke the connection or is shutting down (down,
    /// restarting, failing over, out of connections): an outage, not the request's fault;
    /// try again. (A write whose commit was answered just as the connection broke was
    /// made: transactional messages carry an idempotency key for that.)
    Unreachable,
    /// No connection within the pool's wait (5 s): every one busy, or none can be opened
    /// (sqlx keeps trying a refused connection until then).
    NoConnection,
    Other,
}

fn db_class(error: &sqlx::Error) -> DbClass {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if code.starts_with("22") => DbClass::BadValue,
            Some("57014" | "55P03" | "25P03" | "40P01" | "40001") => DbClass::TooSlow,
            _ if is_transient(error) => DbClass::Unreachable,
            _ => DbClass::Other,
        },
        sqlx::Error::PoolTimedOut => DbClass::NoConnection,
        _ if is_transient(error) => DbClass::Unreachable,
        _ => DbClass::Other,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Never leak SQL or connection details to callers; the log has them.
            Self::Db(error) => match db_class(error) {
                DbClass::BadValue => {
                    tracing::info!(%error, "a value PostgreSQL refused");
                    "a value in the request is out of range or cannot be stored".to_owned()
                }
                DbClass::TooSlow => {
                    tracing::warn!(%error, "a request ran out of time in the database");
                    "the server is busy; try again shortly".to_owned()
                }
                DbClass::Unreachable => {
                    tracing::warn!(%error, "the database is out of reach");
                    "the server cannot reach its database; try again shortly".to_owned()
                }
                DbClass::NoConnection => {
                    tracing::warn!(%error, "no database connection in time");
                    "the server could not get a database connection in time (busy, or its \
                     database out of reach); try again shortly"
                        .to_owned()
                }
                DbClass::Other => {
                    tracing::error!(%error, "database error while serving a request");
                    "internal error".to_owned()
                }
            },
            other => other.to_string(),
        };
        let retry_after = match &self {
            Self::Busy { retry_after, .. } => Some(*retry_after),
            Self::Unavailable(_) => Some(5),
            Self::Db(error) => match db_class(error) {
                DbClass::TooSlow => Some(1),
                DbClass::NoConnection => Some(2),
                DbClass::Unreachable => Some(5),
                DbClass::BadValue | DbClass::Other => None,
            },
            _ => None,
        };
        let (fields, rows, error_rows) = match self {
            Self::Invalid { fields, .. } => (fields, Vec::new(), None),
            Self::InvalidRows {
                rows, error_rows, ..
            } => (Vec::new(), rows, Some(error_rows)),
            _ => (Vec::new(), Vec::new(), None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                status: status.as_u16(),
                message,
                fields,
                rows,
                error_rows,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// The field a constraint guards, as the caller named it: PostgreSQL names a column's own
/// constraints `<table>_<column>_fkey` and `<table>_<column>_check`.
fn constrained_field(constraint: Option<&str>, table: Option<&str>, what: &str) -> String {
    let Some(constraint) = constraint else {
        return what.to_owned();
    };
    let column = table
        .and_then(|table| constraint.strip_prefix(table))
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(|rest| {
            rest.strip_suffix("_fkey")
                .or_else(|| rest.strip_suffix("_check"))
        })
        .filter(|column| !column.is_empty());
    column.unwrap_or(constraint).to_owned()
}

/// Maps PostgreSQL constraint violations a caller can cause to 4xx answers.
pub fn from_constraint(error: sqlx::Error, what: &str) -> ApiError {
    if let sqlx::Error::Database(db) = &error {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return ApiError::Conflict(format!("a {what} with that name already exists"));
            }
            sqlx::error::ErrorKind::CheckViolation => {
                return ApiError::field(
                    &constrained_field(db.constraint(), db.table(), what),
                    "value out of the allowed range",
                );
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return ApiError::field(
                    &constrained_field(db.constraint(), db.table(), what),
                    "refers to an object that does not exist",
                );
            }
            _ => {}
        }
    }
    ApiError::Db(error)
}

#[cfg(test)]
mod tests {
    use super::{ApiError, constrained_field};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    #[test]
    fn a_database_out_of_reach_is_a_503_to_try_again_not_a_500() {
        let answer = |error: sqlx::Error| {
            let response = ApiError::Db(error).into_response();
            let retry_after = response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            (response.status(), retry_after)
        };
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            answer(sqlx::Error::Io(reset)),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5".to_owned()))
        );
        assert_eq!(
            answer(sqlx::Error::PoolTimedOut),
            (StatusCode::SERVICE_UNAVAILABLE, Some("2".to_owned()))
        );
        // A bug stays one.
        assert_eq!(
            answer(sqlx::Error::RowNotFound),
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
    }

    #[test]
    fn a_constraint_is_reported_as_the_field_it_guards() {
        let field = |constraint, table| constrained_field(constraint, table, "provider");
        assert_eq!(
            field(Some("providers_tenant_id_fkey"), Some("providers")),
            "tenant_id"
        );
        assert_eq!(
            field(Some("campaigns_batch_size_check"), Some("campaigns")),
            "batch_size"
        );
        // A constraint named otherwise keeps its name; none at all names the object.
        assert_eq!(
            field(Some("segment_owner"), Some("segments")),
            "segment_owner"
        );
        assert_eq!(
            field(Some("providers_fkey"), Some("providers")),
            "providers_fkey"
        );
        assert_eq!(field(None, Some("providers")), "provider");
    }
}
