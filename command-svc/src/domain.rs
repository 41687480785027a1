//! Command rules: validation and the decision of which event a command
//! produces from the current state. Pure functions, no I/O.

use postmesh_proto::v1::EventType;
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

/// A post's state as the event store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostState {
    /// Id; 0 until the store assigns one to a new post.
    pub post_id: i64,
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
    pub post_id: i64,
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
    pub post_id: i64,
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
    pub fn post_id(&self) -> Option<i64> {
        match self {
            Self::Create(_) => None,
            Self::Update(changes) => Some(changes.post_id),
            Self::Delete(removal) => Some(removal.post_id),
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

    fn post_id(&mut self, post_id: i64) {
        if post_id <= 0 {
            self.add("post_id", format!("must be greater than 0 (got {post_id})"));
        }
    }

    fn expected_version(&mut self, version: i64) {
        if version < 0 {
            self.add(
                "expected_version",
                format!("must be 0 (any) or a version >= 1 (got {version})"),
            );
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Error> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidArgument(self.0))
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
    v.finish(Command::Create(NewPost {
        title,
        content,
        author_name,
    }))
}

/// Validates UpdatePost fields; at least one field must be set.
pub fn validate_update(changes: PostChanges) -> Result<Command, Error> {
    let mut v = Violations::default();
    v.post_id(changes.post_id);
    v.expected_version(changes.expected_version);
    if let Some(title) = &changes.title {
        v.text("title", title, Some(MAX_TITLE_CHARS), None);
    }
    if let Some(content) = &changes.content {
        v.text("content", content, None, Some(MAX_CONTENT_BYTES));
    }
    if let Some(author) = &changes.author_name {
        v.text("author_name", author, Some(MAX_AUTHOR_CHARS), None);
    }
    if changes.title.is_none() && changes.content.is_none() && changes.author_name.is_none() {
        v.add("title", "at least one of title, content or author_name must be set");
    }
    v.finish(Command::Update(changes))
}

/// Validates DeletePost fields.
pub fn validate_delete(post_id: i64, expected_version: i64) -> Result<Command, Error> {
    let mut v = Violations::default();
    v.post_id(post_id);
    v.expected_version(expected_version);
    v.finish(Command::Delete(Removal {
        post_id,
        expected_version,
    }))
}

/// Validates the post id of an event-store read.
pub fn validate_post_id(post_id: i64) -> Result<i64, Error> {
    let mut v = Violations::default();
    v.post_id(post_id);
    v.finish(post_id)
}

/// Decides the event a command produces. `current` is the post's state (None
/// when it does not exist, and always None for Create); `now_us` the event time.
pub fn decide(current: Option<&PostState>, command: &Command, now_us: i64) -> Result<(EventType, PostState), Error> {
    match command {
        Command::Create(new) => Ok((
            EventType::PostCreated,
            PostState {
                post_id: 0,
                version: 1,
                title: new.title.clone(),
                content: new.content.clone(),
                author_name: new.author_name.clone(),
                deleted: false,
                created_at_us: now_us,
                updated_at_us: now_us,
            },
        )),
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
            Ok((EventType::PostUpdated, next))
        }
        Command::Delete(removal) => {
            let state = writable(current, removal.post_id, removal.expected_version)?;
            let mut next = state.clone();
            next.deleted = true;
            next.version += 1;
            next.updated_at_us = now_us;
            Ok((EventType::PostDeleted, next))
        }
    }
}

fn writable(current: Option<&PostState>, post_id: i64, expected_version: i64) -> Result<&PostState, Error> {
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
            post_id: 7,
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
        Command::Update(PostChanges {
            post_id: 7,
            expected_version,
            title: title.map(str::to_owned),
            content: None,
            author_name: None,
        })
    }

    #[test]
    fn given_nothing_when_created_then_version_one() {
        let cmd = validate_create("T".into(), "C".into(), "A".into()).expect("valid");
        let (kind, state) = decide(None, &cmd, 42).expect("decided");
        assert_eq!(kind, EventType::PostCreated);
        assert_eq!((state.version, state.created_at_us, state.updated_at_us), (1, 42, 42));
    }

    #[test]
    fn given_a_post_when_title_updated_then_only_title_changes() {
        let (kind, state) = decide(Some(&post(3, false)), &update(0, Some("new")), 99).expect("decided");
        assert_eq!(kind, EventType::PostUpdated);
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
            Err(Error::Deleted(7))
        ));
        let delete = validate_delete(7, 0).expect("valid");
        assert!(matches!(decide(Some(&deleted), &delete, 0), Err(Error::Deleted(7))));
    }

    #[test]
    fn given_no_post_when_deleted_then_not_found() {
        let delete = validate_delete(7, 0).expect("valid");
        assert!(matches!(decide(None, &delete, 0), Err(Error::NotFound(7))));
    }

    #[test]
    fn given_a_post_when_deleted_then_flagged_and_versioned() {
        let delete = validate_delete(7, 3).expect("valid");
        let (kind, state) = decide(Some(&post(3, false)), &delete, 5).expect("decided");
        assert_eq!(kind, EventType::PostDeleted);
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
        let changes = PostChanges {
            post_id: 0,
            expected_version: -1,
            title: None,
            content: None,
            author_name: None,
        };
        let Err(Error::InvalidArgument(violations)) = validate_update(changes) else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["post_id", "expected_version", "title"]);
    }
}
