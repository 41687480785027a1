//! Values built from files that may be replaced while the process runs: TLS
//! certificates and keys, token verification keys. Kubernetes updates a
//! mounted Secret in place, so a rotation must not need a restart.
//!
//! A background task re-reads the files every `interval` and rebuilds the
//! value when their bytes changed. A rebuild that fails (a half-written
//! rotation, a key that does not match its certificate) keeps the previous
//! value and is logged, naming the files but never their content; it is
//! retried when the files change again.

use std::{
    fmt::Display,
    path::PathBuf,
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

/// The current value, swapped atomically when its files change.
pub struct Reloading<T> {
    current: Arc<RwLock<Arc<T>>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloading")
    }
}

/// Why the first load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E> {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The files were read but do not make a valid value.
    #[error("{0}")]
    Build(E),
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, (String, std::io::Error)> {
    paths
        .iter()
        .map(|path| std::fs::read(path).map_err(|error| (path.display().to_string(), error)))
        .collect()
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads `paths` and builds the value with `build` (which receives the
    /// files' bytes in the same order); then keeps watching them every
    /// `interval` while any clone of the returned handle is alive. Must be
    /// called inside a Tokio runtime.
    pub fn watch<F, E>(
        what: &'static str,
        paths: Vec<PathBuf>,
        interval: Duration,
        build: F,
    ) -> Result<Self, LoadError<E>>
    where
        F: Fn(&[Vec<u8>]) -> Result<T, E> + Send + Sync + 'static,
        E: Display + 'static,
    {
        let bytes = read_all(&paths).map_err(|(path, source)| LoadError::Read { path, source })?;
        let value = build(&bytes).map_err(LoadError::Build)?;
        let current = Arc::new(RwLock::new(Arc::new(value)));
        tokio::spawn(watch_loop(
            what,
            paths,
            interval.max(Duration::from_millis(10)),
            bytes,
            Arc::downgrade(&current),
            build,
        ));
        Ok(Self { current })
    }

    /// The value now in force.
    pub fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

async fn watch_loop<T, F, E>(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    mut seen: Vec<Vec<u8>>,
    current: Weak<RwLock<Arc<T>>>,
    build: F,
) where
    F: Fn(&[Vec<u8>]) -> Result<T, E>,
    E: Display,
{
    let files = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut read_failing = false;
    loop {
        tokio::time::sleep(interval).await;
        let Some(current) = current.upgrade() else { return };
        let bytes = match read_all(&paths) {
            Ok(bytes) => {
                read_failing = false;
                bytes
            }
            Err((path, error)) => {
                if !read_failing {
                    tracing::warn!(%path, %error, what, "cannot re-read; keeping the current one");
                    read_failing = true;
                }
                continue;
            }
        };
        if bytes == seen {
            continue;
        }
        seen = bytes;
        match build(&seen) {
            Ok(value) => {
                let value = Arc::new(value);
                match current.write() {
                    Ok(mut guard) => *guard = value,
                    Err(poisoned) => *poisoned.into_inner() = value,
                }
                tracing::info!(what, files = %files, "reloaded after the files changed");
            }
            Err(error) => {
                tracing::warn!(what, files = %files, %error, "changed files are not usable; keeping the previous one");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn picks_up_changes_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let parse = |files: &[Vec<u8>]| String::from_utf8_lossy(&files[0]).trim().parse::<u32>();
        let value = Reloading::watch("number", vec![path.clone()], Duration::from_millis(20), parse).unwrap();
        assert_eq!(*value.get(), 1);
        std::fs::write(&path, "2").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*value.get(), 2);
        std::fs::write(&path, "not a number").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*value.get(), 2, "a bad file keeps the previous value");
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*value.get(), 2, "a missing file keeps the previous value");
    }

    #[tokio::test]
    async fn a_missing_file_fails_the_first_load_naming_it() {
        let error = Reloading::watch(
            "x",
            vec![PathBuf::from("/nonexistent/cert.pem")],
            Duration::from_secs(1),
            |_: &[Vec<u8>]| Ok::<_, String>(()),
        )
        .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/cert.pem"), "{error}");
    }
}
