//! Command rules: validation and the decision of which event a command
//! produces from the current state. Pure functions, no I/O.

use postmesh_proto::{v1::EventType, PostId};
use tonic_types::FieldViolation;

use crate::error::Error;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest author name, in characters.
pub const MAX_AUTHOR_CHARS: usize = 100;
/// Largest content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 100_000;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// A post's state as the event store holds it (its id is the key it is held under).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostState {
    /// Version after the latest event.
    pub version: i64,
    /// Title.
    pub title: String,
    /// Content.
    pub content: String,
    /// Author.
    pub author_name: String,
    /// Deleted flag.
    pub deleted: bool,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_us: i64,
    /// Time of the latest change, microseconds since the Unix epoch.
    pub updated_at_us: i64,
}

/// What a command decided: the event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The post it changes; None for a new post, whose id the store assigns.
    pub post_id: Option<PostId>,
    /// What happened.
    pub event_type: EventType,
    /// The post's state after the event; `updated_at_us` is the event's time.
    pub state: PostState,
}

/// A validated CreatePost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPost {
    /// Title.
    pub title: String,
    /// Content.
    pub content: String,
    /// Author.
    pub author_name: String,
}

/// A validated UpdatePost: only the set fields change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostChanges {
    /// Target post.
    pub post_id: PostId,
    /// 0 for any version.
    pub expected_version: i64,
    /// New title.
    pub title: Option<String>,
    /// New content.
    pub content: Option<String>,
    /// New author.
    pub author_name: Option<String>,
}

/// A validated DeletePost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Target post.
    pub post_id: PostId,
    /// 0 for any version.
    pub expected_version: i64,
}

/// A command after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create a post.
    Create(NewPost),
    /// Change fields of a post.
    Update(PostChanges),
    /// Delete a post.
    Delete(Removal),
}

impl Command {
    /// The post a command targets; None for Create.
    pub fn post_id(&self) -> Option<PostId> {
        match self {
            Self::Create(_) => None,
            Self::Update(changes) => Some(changes.post_id),
            Self::Delete(removal) => Some(removal.post_id),
        }
    }

    /// The bytes of text the command carries (what a batch is bounded by).
    pub fn content_bytes(&self) -> usize {
        let len = |field: &Option<String>| field.as_ref().map_or(0, String::len);
        match self {
            Self::Create(new) => new.title.len() + new.content.len() + new.author_name.len(),
            Self::Update(changes) => len(&changes.title) + len(&changes.content) + len(&changes.author_name),
            Self::Delete(_) => 0,
        }
    }

    /// The action word for logs.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Create(_) => "create",
            Self::Update(_) => "update",
            Self::Delete(_) => "delete",
        }
    }
}

/// Collects every violation of a request, so a client fixes them all at once.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn text(&mut self, field: &str, value: &str, max_chars: Option<usize>, max_bytes: Option<usize>) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty or only whitespace");
        }
        if let Some(max) = max_chars {
            let chars = value.chars().count();
            if chars > max {
                self.add(field, format!("must be at most {max} characters (got {chars})"));
            }
        }
        if let Some(max) = max_bytes {
            if value.len() > max {
                self.add(field, format!("must be at most {max} bytes (got {})", value.len()));
            }
        }
    }

    fn post_id(&mut self, post_id: i64) -> Option<PostId> {
        PostId::from_field("post_id", post_id)
            .map_err(|violation| self.0.push(violation))
            .ok()
    }

    fn expected_version(&mut self, version: i64) {
        if version < 0 {
            self.add(
                "expected_version",
                format!("must be 0 (any) or a version >= 1 (got {version})"),
            );
        }
    }

    /// `value` when nothing was violated; None only comes with a violation.
    fn finish<T>(self, value: Option<T>) -> Result<T, Error> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(Error::InvalidArgument(self.0)),
        }
    }
}

/// Checks an idempotency key; empty means "none".
pub fn validate_idempotency_key(key: &str) -> Result<Option<String>, Error> {
    if key.is_empty() {
        return Ok(None);
    }
    let chars = key.chars().count();
    if chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(Error::field(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters (got {chars})"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Validates CreatePost fields.
pub fn validate_create(title: String, content: String, author_name: String) -> Result<Command, Error> {
    let mut v = Violations::default();
    v.text("title", &title, Some(MAX_TITLE_CHARS), None);
    v.text("content", &content, None, Some(MAX_CONTENT_BYTES));
    v.text("author_name", &author_name, Some(MAX_AUTHOR_CHARS), None);
    v.finish(Some(Command::Create(NewPost {
        title,
        content,
        author_name,
    })))
}

/// Validates UpdatePost fields; at least one field must be set.
pub fn validate_update(
    post_id: i64,
    expected_version: i64,
    title: Option<String>,
    content: Option<String>,
    author_name: Option<String>,
) -> Result<Command, Error> {
    let mut v = Violations::default();
    let post_id = v.post_id(post_id);
    v.expected_version(expected_version);
    if let Some(title) = &title {
        v.text("title", title, Some(MAX_TITLE_CHARS), None);
    }
    if let Some(content) = &content {
        v.text("content", content, None, Some(MAX_CONTENT_BYTES));
    }
    if let Some(author) = &author_name {
        v.text("author_name", author, Some(MAX_AUTHOR_CHARS), None);
    }
    if title.is_none() && content.is_none() && author_name.is_none() {
        v.add("title", "at least one of title, content or author_name must be set");
    }
    v.finish(post_id.map(|post_id| {
        Command::Update(PostChanges {
            post_id,
            expected_version,
            title,
            content,
            author_name,
        })
    }))
}

/// Validates DeletePost fields.
pub fn validate_delete(post_id: i64, expected_version: i64) -> Result<Command, Error> {
    let mut v = Violations::default();
    let post_id = v.post_id(post_id);
    v.expected_version(expected_version);
    v.finish(post_id.map(|post_id| {
        Command::Delete(Removal {
            post_id,
            expected_version,
        })
    }))
}

/// Validates the post id of an event-store read.
pub fn validate_post_id(post_id: i64) -> Result<PostId, Error> {
    let mut v = Violations::default();
    let post_id = v.post_id(post_id);
    v.finish(post_id)
}

/// Decides the event a command produces. `current` is the state of the
/// command's post (None when it does not exist, and always None for Create);
/// `now_us` the event time.
pub fn decide(current: Option<&PostState>, command: &Command, now_us: i64) -> Result<Decision, Error> {
    match command {
        Command::Create(new) => Ok(Decision {
            post_id: None,
            event_type: EventType::PostCreated,
            state: PostState {
                version: 1,
                title: new.title.clone(),
                content: new.content.clone(),
                author_name: new.author_name.clone(),
                deleted: false,
                created_at_us: now_us,
                updated_at_us: now_us,
            },
        }),
        Command::Update(changes) => {
            let state = writable(current, changes.post_id, changes.expected_version)?;
            let mut next = state.clone();
            if let Some(title) = &changes.title {
                next.title = title.clone();
            }
            if let Some(content) = &changes.content {
                next.content = content.clone();
            }
            if let Some(author) = &changes.author_name {
                next.author_name = author.clone();
            }
            next.version += 1;
            next.updated_at_us = now_us;
            Ok(Decision {
                post_id: Some(changes.post_id),
                event_type: EventType::PostUpdated,
                state: next,
            })
        }
        Command::Delete(removal) => {
            let state = writable(current, removal.post_id, removal.expected_version)?;
            let mut next = state.clone();
            next.deleted = true;
            next.version += 1;
            next.updated_at_us = now_us;
            Ok(Decision {
                post_id: Some(removal.post_id),
                event_type: EventType::PostDeleted,
                state: next,
            })
        }
    }
}

fn writable(current: Option<&PostState>, post_id: PostId, expected_version: i64) -> Result<&PostState, Error> {
    let state = current.ok_or(Error::NotFound(post_id))?;
    if state.deleted {
        return Err(Error::Deleted(post_id));
    }
    if expected_version != 0 && expected_version != state.version {
        return Err(Error::VersionMismatch {
            post_id,
            expected: expected_version,
            current: state.version,
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(version: i64, deleted: bool) -> PostState {
        PostState {
            version,
            title: "t".into(),
            content: "c".into(),
            author_name: "a".into(),
            deleted,
            created_at_us: 1,
            updated_at_us: 1,
        }
    }

    fn update(expected_version: i64, title: Option<&str>) -> Command {
        validate_update(7, expected_version, title.map(str::to_owned), None, None).expect("valid")
    }

    const SEVEN: PostId = match PostId::new(7) {
        Ok(id) => id,
        Err(_) => panic!("7 is positive"),
    };

    #[test]
    fn given_nothing_when_created_then_version_one() {
        let cmd = validate_create("T".into(), "C".into(), "A".into()).expect("valid");
        let Decision {
            post_id,
            event_type: kind,
            state,
        } = decide(None, &cmd, 42).expect("decided");
        assert_eq!((post_id, kind), (None, EventType::PostCreated));
        assert_eq!((state.version, state.created_at_us, state.updated_at_us), (1, 42, 42));
    }

    #[test]
    fn given_a_post_when_title_updated_then_only_title_changes() {
        let Decision {
            post_id,
            event_type: kind,
            state,
        } = decide(Some(&post(3, false)), &update(0, Some("new")), 99).expect("decided");
        assert_eq!((post_id, kind), (Some(SEVEN), EventType::PostUpdated));
        assert_eq!(state.title, "new");
        assert_eq!((state.content.as_str(), state.author_name.as_str()), ("c", "a"));
        assert_eq!((state.version, state.created_at_us, state.updated_at_us), (4, 1, 99));
    }

    #[test]
    fn given_a_post_when_expected_version_is_stale_then_aborted_with_current() {
        let err = decide(Some(&post(3, false)), &update(2, Some("x")), 0).expect_err("mismatch");
        assert!(matches!(
            err,
            Error::VersionMismatch {
                expected: 2,
                current: 3,
                ..
            }
        ));
        assert!(err.to_string().contains("version 3"));
    }

    #[test]
    fn given_a_deleted_post_when_updated_or_deleted_then_failed_precondition() {
        let deleted = post(4, true);
        assert!(matches!(
            decide(Some(&deleted), &update(0, Some("x")), 0),
            Err(Error::Deleted(SEVEN))
        ));
        let delete = validate_delete(7, 0).expect("valid");
        assert!(matches!(decide(Some(&deleted), &delete, 0), Err(Error::Deleted(SEVEN))));
    }

    #[test]
    fn given_no_post_when_deleted_then_not_found() {
        let delete = validate_delete(7, 0).expect("valid");
        assert!(matches!(decide(None, &delete, 0), Err(Error::NotFound(SEVEN))));
    }

    #[test]
    fn given_a_post_when_deleted_then_flagged_and_versioned() {
        let delete = validate_delete(7, 3).expect("valid");
        let Decision {
            post_id,
            event_type: kind,
            state,
        } = decide(Some(&post(3, false)), &delete, 5).expect("decided");
        assert_eq!((post_id, kind), (Some(SEVEN), EventType::PostDeleted));
        assert!(state.deleted);
        assert_eq!(state.version, 4);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let Err(Error::InvalidArgument(violations)) =
            validate_create(" ".into(), "x".repeat(MAX_CONTENT_BYTES + 1), "a".repeat(101))
        else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["title", "content", "author_name"]);
    }

    #[test]
    fn limits_count_characters_for_names_and_bytes_for_content() {
        assert!(validate_create("é".repeat(200), "c".into(), "ü".repeat(100)).is_ok());
        assert!(validate_create("é".repeat(201), "c".into(), "a".into()).is_err());
        assert!(validate_create("t".into(), "é".repeat(50_001), "a".into()).is_err());
    }

    #[test]
    fn update_needs_a_positive_id_and_some_field() {
        let Err(Error::InvalidArgument(violations)) = validate_update(0, -1, None, None, None) else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["post_id", "expected_version", "title"]);
    }
}
