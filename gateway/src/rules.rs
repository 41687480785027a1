//! The route table, read from the `google.api.http` options of the served
//! methods: one [`Binding`] per HTTP rule (additional bindings included),
//! checked against the request message when the table is built, so a rule
//! that names a missing field fails the server's start, not a request.

use std::fmt;

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
};

/// The extension that carries a method's HTTP rule.
const HTTP_RULE_EXTENSION: &str = "google.api.http";

/// Why the route table cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The descriptor set does not decode.
    #[error("descriptor set: {0}")]
    Descriptors(String),
    /// A service to serve is not in the descriptor set.
    #[error("service {0} is not in the descriptor set")]
    UnknownService(String),
    /// The descriptor set lacks `google/api/annotations.proto`.
    #[error("the descriptor set has no {HTTP_RULE_EXTENSION} extension (import google/api/annotations.proto)")]
    NoHttpExtension,
    /// A rule this gateway cannot serve, or that names fields the request lacks.
    #[error("{method}: HTTP rule {template:?}: {reason}")]
    Invalid {
        /// The rpc.
        method: String,
        /// Its path template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// Two rules claim the same HTTP method and path.
    #[error("{http_method} {template} is bound twice: by {first} and by {second}")]
    Duplicate {
        /// The HTTP method.
        http_method: Method,
        /// The path template.
        template: String,
        /// The first rpc.
        first: String,
        /// The second rpc.
        second: String,
    },
}

/// A chain of fields from the request message down to a scalar
/// (`post_id`, or `filter.author_name` for a nested message).
#[derive(Clone, Debug)]
pub struct FieldPath(pub Vec<FieldDescriptor>);

impl FieldPath {
    /// The last field of the chain.
    pub fn leaf(&self) -> &FieldDescriptor {
        // Built non-empty by `resolve`.
        &self.0[self.0.len() - 1]
    }

    /// True when this path starts with `other`'s fields (or equals it).
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        other.0.len() <= self.0.len() && other.0.iter().zip(&self.0).all(|(a, b)| a == b)
    }

    /// Resolves dotted names (proto or JSON names) from `message`; every
    /// field but the last must be a singular message.
    pub fn resolve(message: &MessageDescriptor, dotted: &str) -> Option<FieldPath> {
        let mut fields = Vec::new();
        let mut current = message.clone();
        let mut parts = dotted.split('.').peekable();
        while let Some(part) = parts.next() {
            let field = current
                .get_field_by_name(part)
                .or_else(|| current.get_field_by_json_name(part))?;
            if parts.peek().is_some() {
                match field.kind() {
                    Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                    _ => return None,
                }
            }
            fields.push(field);
        }
        (!fields.is_empty()).then_some(FieldPath(fields))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(FieldDescriptor::name).collect();
        f.write_str(&names.join("."))
    }
}

/// Where the request body goes.
#[derive(Clone, Debug)]
pub enum BodyRule {
    /// No body: fields not bound by the path come from the query string.
    None,
    /// `body: "*"`: the body is the request message (minus path fields).
    Whole,
    /// `body: "field"`: the body is that (message) field; the rest comes
    /// from the path and the query string.
    Field(FieldDescriptor),
}

/// One HTTP route bound to one rpc.
#[derive(Clone, Debug)]
pub struct Binding {
    /// The HTTP method.
    pub http_method: Method,
    /// The path template as written in the annotation, e.g. `/post/{post_id}`.
    pub template: String,
    /// The same path in the router's syntax, e.g. `/post/{p0}`.
    pub router_path: String,
    /// The field each router parameter `p<i>` sets.
    pub path_fields: Vec<FieldPath>,
    /// Where the body goes.
    pub body: BodyRule,
    /// `response_body`: the response field sent instead of the whole message.
    pub response_body: Option<FieldDescriptor>,
    /// The rpc.
    pub method: MethodDescriptor,
    /// `/package.Service/Method`, the gRPC path.
    pub grpc_path: http::uri::PathAndQuery,
}

impl Binding {
    /// True for server-streaming rpcs (answered as newline-delimited JSON).
    pub fn is_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// The request message.
    pub fn input(&self) -> MessageDescriptor {
        self.method.input()
    }

    /// True when `path` is set by the URL path or taken by the body field,
    /// so it cannot also come from the query string.
    pub fn binds(&self, path: &FieldPath) -> bool {
        let by_path = self.path_fields.iter().any(|bound| path.starts_with(bound));
        let by_body = match &self.body {
            BodyRule::None => false,
            BodyRule::Whole => true,
            BodyRule::Field(field) => path.0.first() == Some(field),
        };
        by_path || by_body
    }
}

/// A route as listed for docs and for the OpenAPI cross-check.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteInfo {
    /// Upper-case HTTP method.
    pub method: String,
    /// The annotation's path template.
    pub template: String,
    /// `package.Service.Method`.
    pub rpc: String,
}

impl fmt::Display for RouteInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.template, self.rpc)
    }
}

/// Decodes `descriptor_sets` into one pool, keeping extension options.
/// Files present in several sets are taken once.
pub fn pool(descriptor_sets: &[&[u8]]) -> Result<DescriptorPool, RuleError> {
    let mut pool = DescriptorPool::new();
    for set in descriptor_sets {
        pool.decode_file_descriptor_set(*set)
            .map_err(|e| RuleError::Descriptors(e.to_string()))?;
    }
    Ok(pool)
}

/// Every binding of every method of `services`, in declaration order.
pub fn bindings(pool: &DescriptorPool, services: &[String]) -> Result<Vec<Binding>, RuleError> {
    if services.is_empty() {
        // A server with plain HTTP routes only needs no annotations.
        return Ok(Vec::new());
    }
    let extension = pool
        .get_extension_by_name(HTTP_RULE_EXTENSION)
        .ok_or(RuleError::NoHttpExtension)?;
    let mut out: Vec<Binding> = Vec::new();
    for name in services {
        let service = pool
            .get_service_by_name(name)
            .ok_or_else(|| RuleError::UnknownService(name.clone()))?;
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
                continue;
            };
            let mut rules = vec![rule.clone()];
            if let Some(Value::List(extra)) = rule.get_field_by_name("additional_bindings").map(|v| v.into_owned()) {
                rules.extend(extra.into_iter().filter_map(|v| match v {
                    Value::Message(m) => Some(m),
                    _ => None,
                }));
            }
            for rule in rules {
                let binding = binding(&method, &rule)?;
                if let Some(first) = out
                    .iter()
                    .find(|b| b.http_method == binding.http_method && b.router_path == binding.router_path)
                {
                    return Err(RuleError::Duplicate {
                        http_method: binding.http_method,
                        template: binding.template,
                        first: first.method.full_name().to_owned(),
                        second: method.full_name().to_owned(),
                    });
                }
                out.push(binding);
            }
        }
    }
    Ok(out)
}

fn string_field(message: &DynamicMessage, name: &str) -> Option<String> {
    if !message.has_field_by_name(name) {
        return None;
    }
    match message.get_field_by_name(name)?.into_owned() {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn binding(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, RuleError> {
    let invalid = |template: &str, reason: String| RuleError::Invalid {
        method: method.full_name().to_owned(),
        template: template.to_owned(),
        reason,
    };
    let mut pattern = None;
    for (field, http_method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if let Some(template) = string_field(rule, field) {
            pattern = Some((http_method, template));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").map(|v| v.into_owned()) {
            let kind = string_field(&custom, "kind").unwrap_or_default();
            let template = string_field(&custom, "path").unwrap_or_default();
            let http_method = Method::from_bytes(kind.as_bytes())
                .map_err(|_| invalid(&template, format!("custom method {kind:?} is not an HTTP method")))?;
            pattern = Some((http_method, template));
        }
    }
    let Some((http_method, template)) = pattern else {
        return Err(invalid("", "the rule has no HTTP method and path".into()));
    };
    if method.is_client_streaming() {
        return Err(invalid(
            &template,
            "client-streaming rpcs cannot be served over HTTP/JSON".into(),
        ));
    }
    let input = method.input();
    let (router_path, path_fields) = parse_template(&input, &template).map_err(|reason| invalid(&template, reason))?;

    let body = match string_field(rule, "body").as_deref() {
        None | Some("") => BodyRule::None,
        Some("*") => BodyRule::Whole,
        Some(name) => {
            let field = input.get_field_by_name(name).ok_or_else(|| {
                invalid(
                    &template,
                    format!("body field {name:?} is not in {}", input.full_name()),
                )
            })?;
            if !matches!(field.kind(), Kind::Message(_)) || field.is_list() || field.is_map() {
                return Err(invalid(
                    &template,
                    format!("body field {name:?} must be a singular message"),
                ));
            }
            BodyRule::Field(field)
        }
    };
    let output = method.output();
    let response_body = match string_field(rule, "response_body").as_deref() {
        None | Some("") => None,
        Some(name) => Some(output.get_field_by_name(name).ok_or_else(|| {
            invalid(
                &template,
                format!("response_body field {name:?} is not in {}", output.full_name()),
            )
        })?),
    };
    let grpc_path = format!("/{}/{}", method.parent_service().full_name(), method.name())
        .parse()
        .map_err(|_| invalid(&template, "the rpc's name is not a valid URI path".into()))?;
    Ok(Binding {
        http_method,
        template,
        router_path,
        path_fields,
        body,
        response_body,
        method: method.clone(),
        grpc_path,
    })
}

/// Turns a path template into the router's syntax. Supported: literal
/// segments, `{field}` and `{field=*}` variables (one segment each), and a
/// `:verb` suffix after a literal last segment. Multi-segment variables
/// (`**`, `{name=a/*}`) are refused: no postmesh route needs them.
fn parse_template(input: &MessageDescriptor, template: &str) -> Result<(String, Vec<FieldPath>), String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a path template starts with '/'".into());
    };
    let mut router = String::new();
    let mut fields: Vec<FieldPath> = Vec::new();
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        router.push('/');
        if let Some(inner) = segment.strip_prefix('{') {
            let Some(inner) = inner.strip_suffix('}') else {
                return Err(format!(
                    "segment {segment:?}: a variable ends with '}}' (no verb after a variable)"
                ));
            };
            let (name, sub) = inner.split_once('=').unwrap_or((inner, "*"));
            if sub != "*" {
                return Err(format!(
                    "variable {name:?}: only single-segment variables are supported"
                ));
            }
            let path = FieldPath::resolve(input, name)
                .filter(|p| p.0.iter().map(FieldDescriptor::name).collect::<Vec<_>>().join(".") == name)
                .ok_or_else(|| format!("variable {name:?} is not a field of {}", input.full_name()))?;
            let leaf = path.leaf();
            if leaf.is_list() || leaf.is_map() || matches!(leaf.kind(), Kind::Message(_)) {
                return Err(format!("variable {name:?} must be a singular scalar or enum field"));
            }
            if fields.iter().any(|f| f.to_string() == name) {
                return Err(format!("variable {name:?} appears twice"));
            }
            router.push_str(&format!("{{p{}}}", fields.len()));
            fields.push(path);
        } else {
            let is_last = i + 1 == segments.len();
            let literal = if is_last {
                *segment
            } else {
                segment.split(':').next().unwrap_or(segment)
            };
            if segment.is_empty() || *segment == "*" || *segment == "**" || literal != *segment {
                return Err(format!(
                    "segment {segment:?}: only literal segments and variables are supported"
                ));
            }
            if segment.contains(['{', '}', '*']) || segment.chars().any(char::is_whitespace) {
                return Err(format!("segment {segment:?} is not a literal"));
            }
            router.push_str(segment);
        }
    }
    Ok((router, fields))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn posts() -> DescriptorPool {
        pool(&[postmesh_proto::FILE_DESCRIPTOR_SET]).unwrap()
    }

    fn table(services: &[&str]) -> Vec<String> {
        let services: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        bindings(&posts(), &services)
            .unwrap()
            .iter()
            .map(|b| format!("{} {} {}", b.http_method, b.router_path, b.method.name()))
            .collect()
    }

    #[test]
    fn the_annotations_give_the_seed_routes_and_the_rest() {
        assert_eq!(
            table(&["posts.v1.PostCommand", "posts.v1.EventStore"]),
            [
                "POST /post CreatePost",
                "PATCH /post/{p0} UpdatePost",
                "DELETE /post/{p0} DeletePost",
                "GET /events ReadAll",
                "GET /events/head GetHead",
                "GET /post/{p0}/events ReadPost",
            ]
        );
        assert_eq!(
            table(&["posts.v1.PostQuery"]),
            [
                "GET /post/{p0} GetPost",
                "GET /posts ListPosts",
                "GET /post/{p0}/history GetPostHistory",
                "GET /posts:watch WatchPosts",
            ]
        );
    }

    #[test]
    fn templates_name_fields_of_the_request() {
        let pool = posts();
        let input = pool.get_message_by_name("posts.v1.GetPostRequest").unwrap();
        let (router, fields) = parse_template(&input, "/post/{post_id}/x").unwrap();
        assert_eq!(router, "/post/{p0}/x");
        assert_eq!(fields[0].to_string(), "post_id");
        for (template, reason) in [
            ("post/{post_id}", "starts with '/'"),
            ("/post/{nope}", "not a field"),
            ("/post/{postId}", "not a field"),
            ("/post/{post_id=**}", "single-segment"),
            ("/post/{post_id}:watch", "no verb after a variable"),
            ("/post/*", "only literal"),
            ("/post//x", "only literal"),
            ("/a:b/c", "only literal"),
            ("/post/{post_id}/{post_id}", "twice"),
        ] {
            let error = parse_template(&input, template).unwrap_err();
            assert!(error.contains(reason), "{template}: {error}");
        }
        let (router, _) = parse_template(&input, "/posts:watch").unwrap();
        assert_eq!(router, "/posts:watch");
    }

    #[test]
    fn an_unknown_service_is_refused() {
        let error = bindings(&posts(), &["posts.v1.Nope".to_owned()]).unwrap_err();
        assert!(matches!(error, RuleError::UnknownService(_)), "{error}");
    }
}
