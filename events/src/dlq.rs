//! The dead-letter entry: a stream entry event-relay gave up on, copied to
//! the dead-letter stream (`<stream>.dlq`, see
//! [`StreamArgs::dlq_stream`](crate::topology::StreamArgs::dlq_stream)) with
//! its original fields and the relay's own, which say why. Replaying it puts
//! the original fields back on the stream it came from.

use crate::entry::{field as entry_field, Entry};

/// The fields the relay adds to the original ones.
pub mod field {
    /// The error of the last attempt.
    pub const ERROR: &str = "dlq_error";
    /// How many attempts were made.
    pub const ATTEMPTS: &str = "dlq_attempts";
    /// The stream the entry came from (where replay puts it back).
    pub const SOURCE_STREAM: &str = "dlq_source_stream";
    /// The entry's id in that stream.
    pub const SOURCE_ID: &str = "dlq_source_id";
    /// When it was dead-lettered (RFC 3339).
    pub const FAILED_AT: &str = "dlq_failed_at";
    /// Every field the relay adds; replay strips them.
    pub const ALL: [&str; 5] = [ERROR, ATTEMPTS, SOURCE_STREAM, SOURCE_ID, FAILED_AT];
}

/// `XADD <cmd's stream> [MAXLEN ~ <max_len>] * <the entry's original
/// fields>`: the part of both commands below that copies an entry, without
/// the relay's fields.
fn xadd_original(stream: &str, max_len: Option<u64>, entry: &Entry) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(max_len) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(max_len);
    }
    cmd.arg("*");
    for (name, value) in &entry.fields {
        if !field::ALL.contains(&name.as_str()) {
            cmd.arg(name).arg(value.as_slice());
        }
    }
    cmd
}

/// The `XADD` that dead-letters `entry` onto `dlq_stream`: its original
/// fields, then why (`error`, after `attempts` attempts), where it came from
/// and when (now). The dead-letter stream keeps about `max_len` letters
/// (`MAXLEN ~`, whole macro nodes): older ones go first. A letter trimmed
/// away loses no event: every event is in the event store, and the
/// catch-up's checkpoint moved past it, so `event-relay rebuild` applies it
/// again once the cause is fixed.
pub fn xadd(dlq_stream: &str, max_len: u64, entry: &Entry, error: &str, attempts: u32) -> redis::Cmd {
    let mut cmd = xadd_original(dlq_stream, Some(max_len), entry);
    cmd.arg(field::ERROR)
        .arg(error)
        .arg(field::ATTEMPTS)
        .arg(attempts)
        .arg(field::SOURCE_STREAM)
        .arg(&entry.stream)
        .arg(field::SOURCE_ID)
        .arg(&entry.id)
        .arg(field::FAILED_AT)
        .arg(chrono::Utc::now().to_rfc3339());
    cmd
}

/// The `XADD` that replays a dead letter onto `stream`: its original fields
/// only, so its attempts start again.
pub fn replay_xadd(stream: &str, letter: &DeadLetter) -> redis::Cmd {
    xadd_original(stream, None, &letter.entry)
}

/// One dead letter, as listed.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The stream it came from ("" when the entry does not say).
    pub source_stream: String,
    /// Its id there.
    pub source_id: String,
    /// The post, as recorded on the entry.
    pub post_id: String,
    /// The version, as recorded on the entry.
    pub version: String,
    /// create, update, delete or unknown.
    pub action: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: String,
    /// When it was dead-lettered.
    pub failed_at: String,
    /// Every field, original ones included.
    pub entry: Entry,
}

impl From<Entry> for DeadLetter {
    fn from(entry: Entry) -> Self {
        Self {
            id: entry.id.clone(),
            source_stream: entry.text(field::SOURCE_STREAM),
            source_id: entry.text(field::SOURCE_ID),
            post_id: entry.text(entry_field::POST_ID),
            version: entry.text(entry_field::VERSION),
            action: crate::topology::Action::label(entry.action()).to_owned(),
            error: entry.text(field::ERROR),
            attempts: entry.text(field::ATTEMPTS),
            failed_at: entry.text(field::FAILED_AT),
            entry,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::entry::Fields;

    fn fields_of(cmd: &redis::Cmd) -> Fields {
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                redis::Arg::Cursor => Vec::new(),
            })
            .collect();
        // The fields follow the id (`*`), after any MAXLEN option.
        let id = args.iter().position(|arg| arg.as_slice() == b"*").unwrap();
        args[id + 1..]
            .chunks(2)
            .map(|pair| (String::from_utf8(pair[0].clone()).unwrap(), pair[1].clone()))
            .collect()
    }

    #[test]
    fn a_dead_letter_keeps_the_entry_and_says_why_and_replay_strips_that() {
        let mut fields = Fields::new();
        fields.insert("post_id".into(), b"7".to_vec());
        fields.insert("version".into(), b"2".to_vec());
        fields.insert("event_type".into(), b"PostDeleted".to_vec());
        fields.insert("event".into(), b"\x08\x01".to_vec());
        let entry = Entry {
            stream: "posts.events".into(),
            id: "5-0".into(),
            fields: fields.clone(),
        };
        let dead = Entry {
            stream: "posts.events.dlq".into(),
            id: "9-0".into(),
            fields: fields_of(&xadd("posts.events.dlq", 10_000, &entry, "boom", 3)),
        };
        let letter = DeadLetter::from(dead);
        assert_eq!(letter.id, "9-0");
        assert_eq!(letter.source_stream, "posts.events");
        assert_eq!(letter.source_id, "5-0");
        assert_eq!((letter.post_id.as_str(), letter.version.as_str()), ("7", "2"));
        assert_eq!(letter.action, "delete");
        assert_eq!((letter.error.as_str(), letter.attempts.as_str()), ("boom", "3"));
        assert!(chrono::DateTime::parse_from_rfc3339(&letter.failed_at).is_ok());
        assert_eq!(fields_of(&replay_xadd("posts.events", &letter)), fields);
        let capped = xadd("posts.events.dlq", 10_000, &entry, "boom", 3);
        let args: Vec<_> = capped.args_iter().take(5).collect();
        assert_eq!(
            args,
            ["XADD", "posts.events.dlq", "MAXLEN", "~", "10000"].map(|a| redis::Arg::Simple(a.as_bytes())),
            "the dead-letter stream is capped"
        );
    }
}
