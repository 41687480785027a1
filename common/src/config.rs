//! Helpers for the services' settings (clap `Args` with environment
//! fallbacks).
//!
//! - Durations are `Duration` fields. A variable's name says its unit
//!   (`*_SECS`, `*_MS`), and [`secs`] or [`millis`] reads the number in it;
//!   code never converts units again.
//! - Defaults are written once, in the `#[arg]` attributes. [`defaults`]
//!   gives a settings struct as a start with no flags and no environment
//!   would, so `Default` impls and test configurations derive from them
//!   instead of restating them.

use std::time::Duration;

use clap::{Args, Command, FromArgMatches};

/// Reads seconds (fractions allowed, `0.5`), for `*_SECS` settings.
pub fn secs(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(value).map_err(|_| format!("{text:?} is not a duration of zero seconds or more"))
}

/// Reads whole milliseconds, for `*_MS` settings.
pub fn millis(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("{text:?} is not a whole number of milliseconds"))
}

/// None for zero, which the settings that can be turned off use for "off".
pub fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// The settings `T` holds when no flag is given and no variable is set.
///
/// # Panics
/// When a setting of `T` has no default (a programming error the tests of
/// each settings struct catch).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults").no_binary_name(true)).mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .unwrap_or_else(|error| panic!("a setting has no default: {error}"));
    T::from_arg_matches(&matches).unwrap_or_else(|error| panic!("the defaults do not parse: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Args, Debug, PartialEq)]
    struct Sample {
        #[arg(long, env = "CONFIG_TEST_WAIT_SECS", default_value = "1.5", value_parser = secs)]
        wait: Duration,
        #[arg(long, env = "CONFIG_TEST_POLL_MS", default_value = "20", value_parser = millis)]
        poll: Duration,
        #[arg(long, env = "CONFIG_TEST_NAME")]
        name: Option<String>,
    }

    #[test]
    fn units_are_read_as_the_names_say() {
        assert_eq!(secs("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(secs("10"), Ok(Duration::from_secs(10)));
        assert!(secs("-1").is_err() && secs("soon").is_err());
        assert_eq!(millis("1500"), Ok(Duration::from_millis(1500)));
        assert!(millis("1.5").is_err());
        assert_eq!(nonzero(Duration::ZERO), None);
    }

    #[test]
    fn defaults_come_from_the_attributes_and_ignore_the_environment() {
        // A variable set in the process must not leak into the defaults.
        std::env::set_var("CONFIG_TEST_NAME", "from-the-environment");
        let sample: Sample = defaults();
        assert_eq!(
            sample,
            Sample {
                wait: Duration::from_millis(1500),
                poll: Duration::from_millis(20),
                name: None,
            }
        );
    }
}
