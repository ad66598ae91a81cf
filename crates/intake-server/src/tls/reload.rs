//! Certificates replaced without a restart: on SIGHUP, or when any of the
//! files changes (checked every second), the node reads them all again. A
//! set that does not load (a half-written file, a key that does not match)
//! is logged and the previous one kept; new connections use the new set,
//! open ones keep theirs until they reconnect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use tokio::sync::watch;

use super::files::{TlsError, TlsFiles, TlsState};
use super::incoming::Current;

/// The configuration in force, shared by the accept loop and the reload
/// task. Cheap to clone.
#[derive(Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    current: Arc<RwLock<Current>>,
}

/// What a file looked like last time: a change of either means "read again".
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl TlsReloader {
    /// Loads the files once; `Ok(None)` when they configure no TLS.
    pub fn load(files: TlsFiles) -> Result<Option<TlsReloader>, TlsError> {
        let Some(state) = TlsState::load(&files)? else {
            return Ok(None);
        };
        Ok(Some(TlsReloader {
            files,
            current: Arc::new(RwLock::new(Arc::new(state))),
        }))
    }

    /// The configuration a new connection should use.
    pub fn current(&self) -> Current {
        self.current.read().clone()
    }

    /// Whether peers must prove themselves with a cluster certificate.
    pub fn mutual(&self) -> bool {
        self.files.peer.is_some()
    }

    /// Reads the files again; on success the new set is in force for the
    /// next connection and `on_change` sees it.
    pub fn reload(&self) -> Result<Current, TlsError> {
        let state = TlsState::load(&self.files)?.ok_or_else(|| TlsError::NoCertificate {
            path: "(no TLS files configured)".into(),
        })?;
        let state = Arc::new(state);
        *self.current.write() = state.clone();
        Ok(state)
    }

    /// Watches for SIGHUP and file changes until `stop`, calling
    /// `on_change` with each set that loaded.
    pub fn spawn_watch(
        &self,
        mut stop: watch::Receiver<bool>,
        on_change: impl Fn(&TlsState) + Send + 'static,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let paths = this.files.paths();
            let mut seen = stamp(&paths);
            let mut hup = hangups();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let signalled = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tick.tick() => false,
                    _ = next_hangup(&mut hup) => true,
                };
                let now = stamp(&paths);
                if !signalled && now == seen {
                    continue;
                }
                // Remembered even when the load fails, so a broken file is
                // reported once, not every second; a fix changes it again.
                seen = now;
                match this.reload() {
                    Ok(state) => {
                        tracing::info!(signalled, "TLS certificates reloaded");
                        on_change(&state);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificates not reloaded; keeping the previous ones")
                    }
                }
            }
        });
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn next_hangup(hup: &mut Hangups) {
    #[cfg(unix)]
    if let Some(s) = hup
        && s.recv().await.is_some()
    {
        return;
    }
    std::future::pending::<()>().await
}
