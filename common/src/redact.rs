//! Connection URLs are logged and put in error messages; their passwords never are.

/// Returns `url` with any password replaced by `***`. Strings that do not
/// parse as URLs are returned unchanged, since they cannot carry a userinfo part
/// we could recognise.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // set_password only fails for URLs that cannot have credentials,
            // which is impossible once a password was parsed.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("mysql://app:s3cret@db:3306/events"),
            "mysql://app:***@db:3306/events"
        );
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
