//! The API's errors: every failure is a JSON body naming what was wrong, with a 4xx status
//! for the caller's mistakes and 5xx only for ours.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
            Self::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Never leak SQL or connection details to callers; the log has them.
            Self::Db(error) => {
                tracing::error!(%error, "database error while serving a request");
                "internal error".to_owned()
            }
            other => other.to_string(),
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
        (status, Json(body)).into_response()
    }
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
                    db.constraint().unwrap_or(what),
                    "value out of the allowed range",
                );
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return ApiError::field(
                    db.constraint().unwrap_or(what),
                    "refers to an object that does not exist",
                );
            }
            _ => {}
        }
    }
    ApiError::Db(error)
}
