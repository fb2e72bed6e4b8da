//! WANDA's JSON envelope, as its Flask API answers: `{"success": true, "data": ...}` or
//! `{"success": false, "code": "NOT_FOUND", "error": "..."}`, with a matching HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

/// A successful answer.
pub(crate) struct Data<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        Json(json!({ "success": true, "data": self.0 })).into_response()
    }
}

/// A failed answer: status, a stable machine-readable code, and a sentence for people.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) error: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            error: error.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, error: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, code, error)
    }

    pub(crate) fn not_found(code: &'static str, error: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, code, error)
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            e.to_string(),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({ "success": false, "code": self.code, "error": self.error });
        (self.status, Json(body)).into_response()
    }
}

pub(crate) type Reply<T> = Result<Data<T>, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn both_shapes() {
        let (s, v) = body(Data(json!({"a": 1})).into_response()).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v, json!({"success": true, "data": {"a": 1}}));
        let (s, v) =
            body(Failure::not_found("SESSION_NOT_FOUND", "no session 'x'").into_response()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            v,
            json!({"success": false, "code": "SESSION_NOT_FOUND", "error": "no session 'x'"})
        );
    }
}
