//! proto3 JSON, as grpcurl prints it: camelCase names, 64-bit integers as
//! strings, enums by name, fields at their default value left out. Input
//! accepts both the proto and the JSON name of a field and refuses unknown
//! fields, as the proto3 JSON mapping prescribes.

use bytes::Bytes;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

/// Content type of JSON responses.
pub const CONTENT_TYPE: &str = "application/json";
/// Content type of streamed responses: one JSON object per line.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";

const SERIALIZE: SerializeOptions = SerializeOptions::new();
const DESERIALIZE: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

/// `message` as proto3 JSON.
pub fn to_bytes(message: &DynamicMessage) -> Result<Bytes, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message.serialize_with_options(&mut serializer, &SERIALIZE)?;
    Ok(Bytes::from(out))
}

/// Writes `{"<key>": <message>}` and a newline to `out`: one line of a stream.
pub fn write_line(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.reserve(key.len() + value.len() + 6);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value);
    out.extend_from_slice(b"}\n");
}

/// Why a JSON body does not make a request message.
#[derive(Debug)]
pub struct JsonError {
    /// Where in the document (`title`, `post.authorName`), empty for the whole body.
    pub path: String,
    /// What is wrong, as serde_json says it (with line and column).
    pub reason: String,
}

/// Parses `bytes` as the proto3 JSON of `desc`; nothing may follow the value.
pub fn from_slice(desc: MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, JsonError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let message = DynamicMessage::deserialize_with_options(desc, tracked, &DESERIALIZE).map_err(|error| {
        let path = track.path().to_string();
        JsonError {
            path: if path == "." || path == "?" {
                String::new()
            } else {
                path
            },
            reason: error.to_string(),
        }
    })?;
    json.end().map_err(|error| JsonError {
        path: String::new(),
        reason: error.to_string(),
    })?;
    Ok(message)
}
