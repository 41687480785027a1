//! What every service's error enum shares when it becomes a gRPC status:
//! field violations, carried as `google.rpc.BadRequest` details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `field: description; ...`, the message part of an invalid request.
pub fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// INVALID_ARGUMENT with `message` and the violations as `google.rpc.BadRequest`.
pub fn invalid_argument(message: String, violations: Vec<FieldViolation>) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_travel_as_bad_request_details() {
        let violations = vec![FieldViolation::new("post_id", "must be greater than 0 (got 0)")];
        assert_eq!(describe(&violations), "post_id: must be greater than 0 (got 0)");
        let status = invalid_argument("invalid request".into(), violations);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["post_id"]);
    }
}
