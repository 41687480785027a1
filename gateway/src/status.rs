//! gRPC status to HTTP: the status code that matches each gRPC code, and the
//! `google.rpc.Status` JSON body (with the details the server put in
//! `grpc-status-details-bin`, such as `google.rpc.BadRequest`).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tonic::{body::Body, Code, Status};

use crate::json;

/// The HTTP status for a gRPC code: the mapping of google.rpc.Code's own
/// documentation (and of grpc-gateway), with one HTTP habit on top: an
/// `ABORTED` answer to a request that carried `If-Match` is
/// `412 Precondition Failed`, since that header's precondition is what
/// failed (the version moved on).
pub fn http_status(code: Code, if_match: bool) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 "client closed request" (nginx's code, as grpc-gateway uses).
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted if if_match => StatusCode::PRECONDITION_FAILED,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// The `google.rpc.Status` of `status` as proto3 JSON: the decoded
/// `grpc-status-details-bin` when the server sent one (code and message
/// filled in from the status when it left them out), else code and message.
pub fn status_json(pool: &DescriptorPool, status: &Status) -> Bytes {
    let message = pool.get_message_by_name("google.rpc.Status").and_then(|desc| {
        let mut message = if status.details().is_empty() {
            DynamicMessage::new(desc)
        } else {
            DynamicMessage::decode(desc, status.details()).ok()?
        };
        message.set_field_by_name("code", Value::I32(status.code() as i32));
        if status.message().is_empty() {
            message.clear_field_by_name("message");
        } else {
            message.set_field_by_name("message", Value::String(status.message().to_owned()));
        }
        json::to_bytes(&message).ok()
    });
    message.unwrap_or_else(|| {
        // No google.rpc.Status in the pool (or details that do not decode):
        // the same shape without details.
        let body = serde_json::json!({ "code": status.code() as i32, "message": status.message() });
        Bytes::from(body.to_string())
    })
}

/// An HTTP error response for `status`.
pub fn error_response(pool: &DescriptorPool, status: &Status, if_match: bool) -> Response<Body> {
    let code = http_status(status.code(), if_match);
    let mut response = Response::new(Body::new(http_body_util::Full::new(status_json(pool, status))));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(json::CONTENT_TYPE));
    if code == StatusCode::UNAUTHORIZED {
        // RFC 6750: say which scheme the server expects.
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A `400 Bad Request` with one `google.rpc.BadRequest` field violation.
pub fn field_violation(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let message = if field.is_empty() {
        description.clone()
    } else {
        format!("invalid request: {field}: {description}")
    };
    <Status as tonic_types::StatusExt>::with_error_details(
        Code::InvalidArgument,
        message,
        tonic_types::ErrorDetails::with_bad_request_violation(field, description),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn codes_map_to_the_usual_http_statuses() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Cancelled, 499),
        ] {
            assert_eq!(http_status(code, false).as_u16(), http, "{code:?}");
        }
        assert_eq!(http_status(Code::Aborted, true), StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn the_body_is_google_rpc_status_with_the_field_violations() {
        let pool = crate::rules::pool(&[tonic_types::pb::FILE_DESCRIPTOR_SET]).unwrap();
        let body = status_json(&pool, &field_violation("title", "must not be empty"));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "code": 3,
                "message": "invalid request: title: must not be empty",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "title", "description": "must not be empty"}],
                }],
            })
        );
        let plain = status_json(&pool, &Status::not_found("post 7 does not exist"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&plain).unwrap(),
            serde_json::json!({"code": 5, "message": "post 7 does not exist"})
        );
    }
}
