//! HTTP request to request message: the body (proto3 JSON), the path
//! variables, the query string and the conventional headers, each set on
//! the fields its rule names. A field given twice with different values
//! (in the path and the body, say) is refused rather than silently chosen.

use std::collections::HashSet;

use base64::Engine;
use http::HeaderMap;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, Value};
use tonic::Status;

use crate::{
    json,
    rules::{Binding, BodyRule, FieldPath},
    status::field_violation,
};

/// HTTP habits mapped onto request fields, when the request message has
/// the field (and the route does not bind it in the path).
pub mod headers {
    /// Sets `idempotency_key`: a retry with the same key is answered from
    /// the first call's result.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// The field `Idempotency-Key` sets.
    pub const IDEMPOTENCY_FIELD: &str = "idempotency_key";
    /// Sets `expected_version` from an ETag (`"3"`, as responses carry it).
    pub const IF_MATCH: &str = "if-match";
    /// The field `If-Match` sets.
    pub const IF_MATCH_FIELD: &str = "expected_version";
    /// Response fields whose value is the ETag, the first present wins.
    pub const ETAG_FIELDS: &[&str] = &["version", "post.version"];
}

/// A request message ready to send, and what the response mapping needs to know.
#[derive(Debug)]
pub struct Built {
    /// The request.
    pub message: DynamicMessage,
    /// True when `If-Match` set a precondition (so ABORTED answers 412).
    pub if_match: bool,
}

/// Which part of the HTTP request set a field, for conflict messages.
#[derive(Clone, Copy, Debug)]
enum Source {
    Path,
    Query,
    Header(&'static str),
}

impl Source {
    fn describe(self) -> String {
        match self {
            Self::Path => "the path".into(),
            Self::Query => "the query string".into(),
            Self::Header(name) => format!("the {name} header"),
        }
    }
}

/// Builds the request message of `binding` from the router's path
/// parameters (`p0`, `p1`, ... in order), the query string, the headers and
/// the body bytes (already read, within the size limit).
pub fn build(
    binding: &Binding,
    params: &[(String, String)],
    query: Option<&str>,
    request_headers: &HeaderMap,
    body: &[u8],
) -> Result<Built, Status> {
    let input = binding.input();
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match &binding.body {
        BodyRule::None if !blank => {
            return Err(field_violation(
                "",
                format!(
                    "{} {} takes no request body; give the fields as query parameters",
                    binding.http_method, binding.template
                ),
            ))
        }
        BodyRule::None => DynamicMessage::new(input.clone()),
        BodyRule::Whole if blank => DynamicMessage::new(input.clone()),
        BodyRule::Whole => json::from_slice(input.clone(), body).map_err(|e| json_error(&e, ""))?,
        BodyRule::Field(field) => {
            let mut message = DynamicMessage::new(input.clone());
            if !blank {
                let Kind::Message(desc) = field.kind() else {
                    unreachable!("rules::binding checks the body field is a message")
                };
                let value = json::from_slice(desc, body).map_err(|e| json_error(&e, field.json_name()))?;
                message.set_field(field, Value::Message(value));
            }
            message
        }
    };

    for (name, value) in params {
        let index = name.strip_prefix('p').and_then(|i| i.parse::<usize>().ok());
        let Some(path) = index.and_then(|i| binding.path_fields.get(i)) else {
            continue;
        };
        let value = parse_text(path.leaf(), value).map_err(|reason| field_violation(&path.to_string(), reason))?;
        set(&mut message, path, value, Source::Path)?;
    }

    let mut from_query = HashSet::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let Some(path) = FieldPath::resolve(&input, &key) else {
            return Err(field_violation(
                &key,
                format!("no such field in {} (query parameter {key:?})", input.full_name()),
            ));
        };
        if binding.binds(&path) {
            let place = if matches!(binding.body, BodyRule::Whole) {
                "this route takes its fields in the JSON body"
            } else {
                "the path or the body sets it"
            };
            return Err(field_violation(
                &path.to_string(),
                format!("not a query parameter here: {place}"),
            ));
        }
        let leaf = path.leaf();
        if !leaf.is_list() && !from_query.insert(path.to_string()) {
            return Err(field_violation(&path.to_string(), "given twice in the query string"));
        }
        let value = parse_text(leaf, &value).map_err(|reason| field_violation(&path.to_string(), reason))?;
        set(&mut message, &path, value, Source::Query)?;
    }

    if let Some(value) = header(request_headers, headers::IDEMPOTENCY_KEY)? {
        if let Some(path) = header_field(binding, headers::IDEMPOTENCY_FIELD, Kind::String) {
            set(
                &mut message,
                &path,
                Value::String(value),
                Source::Header("Idempotency-Key"),
            )?;
        }
    }
    let mut if_match = false;
    if let Some(value) = header(request_headers, headers::IF_MATCH)? {
        if let Some(path) = header_field(binding, headers::IF_MATCH_FIELD, Kind::Int64) {
            if let Some(version) = parse_if_match(&value)? {
                set(&mut message, &path, Value::I64(version), Source::Header("If-Match"))?;
                if_match = true;
            }
        }
    }
    Ok(Built { message, if_match })
}

fn json_error(error: &json::JsonError, prefix: &str) -> Status {
    let field = match (prefix.is_empty(), error.path.is_empty()) {
        (true, _) => error.path.clone(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{}", error.path),
    };
    field_violation(&field, format!("invalid JSON body: {}", error.reason))
}

/// The header's value as text; `None` when absent.
fn header(request_headers: &HeaderMap, name: &'static str) -> Result<Option<String>, Status> {
    let Some(value) = request_headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| field_violation(name, "the header must be visible ASCII"))?;
    Ok(Some(text.trim().to_owned()))
}

/// The top-level field `name` of kind `kind`, unless the path binds it.
fn header_field(binding: &Binding, name: &str, kind: Kind) -> Option<FieldPath> {
    let field = binding.input().get_field_by_name(name)?;
    if field.kind() != kind || field.is_list() {
        return None;
    }
    let path = FieldPath(vec![field]);
    let in_path = binding.path_fields.iter().any(|p| path.starts_with(p));
    (!in_path).then_some(path)
}

/// `If-Match: "3"` (the ETag responses carry) or `3`; `*` is no precondition.
fn parse_if_match(value: &str) -> Result<Option<i64>, Status> {
    if value == "*" {
        return Ok(None);
    }
    let bare = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    bare.parse::<i64>().map(Some).map_err(|_| {
        field_violation(
            headers::IF_MATCH,
            format!("expected one strong ETag such as \"3\" (the version last read), not {value:?}"),
        )
    })
}

/// Sets the field at `path`; a repeated field gets one more element. A
/// singular field already holding a different value is a conflict.
fn set(message: &mut DynamicMessage, path: &FieldPath, value: Value, source: Source) -> Result<(), Status> {
    let mut target = message;
    for field in &path.0[..path.0.len() - 1] {
        target = match target.get_field_mut(field).as_message_mut() {
            Some(inner) => inner,
            None => unreachable!("FieldPath::resolve only walks through message fields"),
        };
    }
    let leaf = path.leaf();
    if leaf.is_list() {
        if let Some(list) = target.get_field_mut(leaf).as_list_mut() {
            list.push(value);
        }
        return Ok(());
    }
    if target.has_field(leaf) && *target.get_field(leaf) != value {
        return Err(field_violation(
            &path.to_string(),
            format!(
                "{} says {} but the request already sets it to {}",
                source.describe(),
                show(&value),
                show(&target.get_field(leaf))
            ),
        ));
    }
    target.set_field(leaf, value);
    Ok(())
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::I64(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::EnumNumber(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        Value::Message(_) | Value::List(_) | Value::Map(_) => "another value".into(),
    }
}

/// Parses a path or query value for `field`, as grpc-gateway does: numbers
/// in decimal, booleans as true/false (or 1/0), enums by name or number,
/// bytes in base64.
fn parse_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
        text.parse::<T>().map_err(|_| format!("expected {what}, not {text:?}"))
    }
    Ok(match field.kind() {
        Kind::Double => Value::F64(number(text, "a number")?),
        Kind::Float => Value::F32(number(text, "a number")?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(number(text, "a 32-bit integer")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(number(text, "a 64-bit integer")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(number(text, "an unsigned 32-bit integer")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(number(text, "an unsigned 64-bit integer")?),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("expected true or false, not {text:?}")),
        },
        Kind::String => Value::String(text.to_owned()),
        Kind::Bytes => {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            let bytes = engines
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .ok_or_else(|| format!("expected base64, not {text:?}"))?;
            Value::Bytes(bytes.into())
        }
        Kind::Enum(desc) => match desc.get_value_by_name(text) {
            Some(value) => Value::EnumNumber(value.number()),
            None => Value::EnumNumber(text.parse::<i32>().map_err(|_| {
                let names: Vec<String> = desc.values().map(|v| v.name().to_owned()).collect();
                format!("expected one of {}, not {text:?}", names.join(", "))
            })?),
        },
        Kind::Message(desc) => {
            return Err(format!(
                "a {} cannot be given in the path or the query string",
                desc.full_name()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::HeaderValue;

    use super::*;
    use crate::rules;

    fn binding(rpc: &str) -> Binding {
        let pool = rules::pool(&[postmesh_proto::FILE_DESCRIPTOR_SET]).unwrap();
        let services = ["posts.v1.PostCommand", "posts.v1.PostQuery"].map(String::from);
        rules::bindings(&pool, &services)
            .unwrap()
            .into_iter()
            .find(|b| b.method.name() == rpc)
            .unwrap()
    }

    fn json_of(built: &Built) -> serde_json::Value {
        serde_json::from_slice(&json::to_bytes(&built.message).unwrap()).unwrap()
    }

    fn p0(value: &str) -> Vec<(String, String)> {
        vec![("p0".into(), value.into())]
    }

    fn violation(status: &Status) -> String {
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let bad = details.bad_request().unwrap();
        format!(
            "{}: {}",
            bad.field_violations[0].field, bad.field_violations[0].description
        )
    }

    #[test]
    fn path_body_and_headers_make_one_message() {
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_static("k-1"));
        h.insert("if-match", HeaderValue::from_static("\"3\""));
        let built = build(
            &binding("UpdatePost"),
            &p0("7"),
            None,
            &h,
            br#"{"title": "t", "author_name": "a"}"#,
        )
        .unwrap();
        assert!(built.if_match);
        assert_eq!(
            json_of(&built),
            serde_json::json!({"postId": "7", "expectedVersion": "3", "title": "t", "authorName": "a", "idempotencyKey": "k-1"})
        );
    }

    #[test]
    fn query_parameters_take_both_names_and_typed_values() {
        let built = build(
            &binding("ListPosts"),
            &[],
            Some("authorName=ann&title=a%20b&include_deleted=true&page_size=3"),
            &HeaderMap::new(),
            b"",
        )
        .unwrap();
        assert!(!built.if_match);
        assert_eq!(
            json_of(&built),
            serde_json::json!({"authorName": "ann", "title": "a b", "includeDeleted": true, "pageSize": 3})
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let h = HeaderMap::new();
        type Case<'a> = (&'a str, Vec<(String, String)>, Option<&'a str>, &'a [u8], &'a str);
        let cases: Vec<Case> = vec![
            ("GetPost", p0("abc"), None, b"", "post_id: expected a 64-bit integer"),
            (
                "GetPost",
                p0("99999999999999999999"),
                None,
                b"",
                "post_id: expected a 64-bit integer",
            ),
            ("GetPost", p0("1"), Some("nope=1"), b"", "nope: no such field"),
            (
                "GetPost",
                p0("1"),
                Some("post_id=2"),
                b"",
                "post_id: not a query parameter here",
            ),
            (
                "GetPost",
                p0("1"),
                Some("include_deleted=maybe"),
                b"",
                "include_deleted: expected true or false",
            ),
            (
                "ListPosts",
                vec![],
                Some("page_size=1&page_size=2"),
                b"",
                "page_size: given twice",
            ),
            (
                "GetPost",
                p0("1"),
                None,
                b"{}",
                ": GET /post/{post_id} takes no request body",
            ),
            (
                "CreatePost",
                vec![],
                Some("title=x"),
                b"",
                "title: not a query parameter here: this route takes",
            ),
            (
                "CreatePost",
                vec![],
                None,
                b"{",
                ": invalid JSON body: EOF while parsing",
            ),
            ("CreatePost", vec![], None, b"[]", ": invalid JSON body: invalid type"),
            (
                "CreatePost",
                vec![],
                None,
                br#"{"title": 5}"#,
                "title: invalid JSON body: invalid type: integer",
            ),
            (
                "CreatePost",
                vec![],
                None,
                br#"{"color": "red"}"#,
                ": invalid JSON body: unrecognized field name 'color'",
            ),
            (
                "CreatePost",
                vec![],
                None,
                br#"{} {}"#,
                ": invalid JSON body: trailing characters",
            ),
            (
                "UpdatePost",
                p0("7"),
                None,
                br#"{"postId": "8"}"#,
                "post_id: the path says 7 but the request already sets it to 8",
            ),
        ];
        for (rpc, params, query, body, expected) in cases {
            let status = build(&binding(rpc), &params, query, &h, body).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            let got = violation(&status);
            assert!(got.starts_with(expected), "{rpc} {query:?}: {got}");
        }
    }

    #[test]
    fn if_match_takes_a_version_etag() {
        assert_eq!(parse_if_match("\"4\"").unwrap(), Some(4));
        assert_eq!(parse_if_match("4").unwrap(), Some(4));
        assert_eq!(parse_if_match("*").unwrap(), None);
        for bad in ["W/\"4\"", "\"4\", \"5\"", "four", ""] {
            assert!(parse_if_match(bad).is_err(), "{bad}");
        }
        // A body naming another version than If-Match is a conflict.
        let mut h = HeaderMap::new();
        h.insert("if-match", HeaderValue::from_static("\"3\""));
        let status = build(&binding("DeletePost"), &p0("7"), Some("expected_version=2"), &h, b"").unwrap_err();
        assert!(violation(&status).contains("the If-Match header says 3"), "{status:?}");
        // Routes without the field ignore the header.
        assert!(!build(&binding("GetPost"), &p0("7"), None, &h, b"").unwrap().if_match);
    }
}
