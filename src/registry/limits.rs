//! What the tool accepts from a registry, whatever the registry sends: how much (each
//! document read whole has a cap, each blob exactly its descriptor's size) and how slowly
//! (cargo's own network settings: `CARGO_HTTP_TIMEOUT` and `CARGO_HTTP_LOW_SPEED_LIMIT`,
//! with cargo's meanings and defaults).
//!
//! - a connection must be made, and an answer must start, within the timeout;
//! - a body must keep arriving at the low-speed limit or more, averaged over each window
//!   of the timeout's length (a registry sending a byte every few seconds is given up on);
//! - a document read whole (manifest, index, config, token, referrers list) must arrive
//!   whole within [`DOCUMENT_WINDOWS`] timeouts.

use std::time::{Duration, Instant};

use oci_client::errors::OciDistributionError;

use crate::error::{Error, Result};

/// The most a manifest or an index may hold: the distribution spec lets registries refuse
/// larger ones (4 MiB), and the tool reads nothing larger either.
pub const MANIFEST_LIMIT: usize = 4 << 20;
/// The most a config (or another small blob read whole) may hold.
pub const SMALL_BLOB_LIMIT: usize = 8 << 20;
/// A document read whole must be complete within this many timeouts.
pub const DOCUMENT_WINDOWS: u32 = 4;
/// Attempts per request, the first included.
pub const ATTEMPTS: u32 = 5;

/// cargo's `http.timeout` default, in seconds.
const DEFAULT_TIMEOUT: u64 = 30;
/// cargo's `http.low-speed-limit` default, in bytes per second.
const DEFAULT_LOW_SPEED: u64 = 10;

/// The time bounds of every registry request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To connect, for an answer to start, and the window the speed is judged over.
    pub timeout: Duration,
    /// Bytes per second, averaged over each window, below which a transfer is given up.
    pub low_speed_limit: u64,
}

impl Timeouts {
    /// From `CARGO_HTTP_TIMEOUT` and `CARGO_HTTP_LOW_SPEED_LIMIT`, else `http.timeout` and
    /// `http.low-speed-limit` of cargo's configuration (as cargo reads it from the current
    /// directory), else cargo's defaults.
    pub fn from_env() -> Result<Timeouts> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        Self::from_env_in(&cwd)
    }

    fn from_env_in(cwd: &std::path::Path) -> Result<Timeouts> {
        let timeout = std::env::var("CARGO_HTTP_TIMEOUT").ok();
        let low_speed = std::env::var("CARGO_HTTP_LOW_SPEED_LIMIT").ok();
        let config = (timeout.is_none() || low_speed.is_none())
            .then(|| cargo_config2::Config::load_with_cwd(cwd).ok())
            .flatten();
        let http = config.as_ref().map(|c| &c.http);
        Self::from_values(
            timeout
                .or_else(|| http?.timeout.map(|n| n.to_string()))
                .as_deref(),
            low_speed
                .or_else(|| http?.low_speed_limit.map(|n| n.to_string()))
                .as_deref(),
        )
    }

    fn from_values(timeout: Option<&str>, low_speed: Option<&str>) -> Result<Timeouts> {
        let number = |name: &str, value: Option<&str>, default: u64, least: u64| match value {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= least => Ok(n),
                _ => Err(Error::usage(format!(
                    "{name}=`{v}` is not a whole number{}",
                    if least > 0 { " above 0" } else { "" }
                ))
                .with_help(format!(
                    "set {name} to a number (cargo's meaning), or unset it"
                ))),
            },
        };
        Ok(Timeouts {
            timeout: Duration::from_secs(number(
                "CARGO_HTTP_TIMEOUT",
                timeout,
                DEFAULT_TIMEOUT,
                1,
            )?),
            low_speed_limit: number(
                "CARGO_HTTP_LOW_SPEED_LIMIT",
                low_speed,
                DEFAULT_LOW_SPEED,
                0,
            )?,
        })
    }

    /// The time a document read whole has, from the request to its last byte.
    pub fn document(&self) -> Duration {
        self.timeout * DOCUMENT_WINDOWS
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            timeout: Duration::from_secs(DEFAULT_TIMEOUT),
            low_speed_limit: DEFAULT_LOW_SPEED,
        }
    }
}

/// The pace of one body as it arrives: [`Pace::wait`] gives up on a stall, [`Pace::got`]
/// on a window in which less than the low-speed limit arrived.
pub struct Pace {
    timeouts: Timeouts,
    window_start: Instant,
    in_window: u64,
}

impl Pace {
    pub fn new(timeouts: Timeouts) -> Pace {
        Pace {
            timeouts,
            window_start: Instant::now(),
            in_window: 0,
        }
    }

    /// Waits for the next piece of the body (`next`), for at most the timeout.
    pub async fn wait<T>(
        &mut self,
        next: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeouts.timeout, next)
            .await
            .map_err(|_| format!("nothing arrived for {} s", self.timeouts.timeout.as_secs()))
    }

    /// Counts `n` more bytes; an error once a whole window has passed with too few.
    pub fn got(&mut self, n: usize) -> Result<(), String> {
        self.in_window += n as u64;
        let elapsed = self.window_start.elapsed();
        if elapsed < self.timeouts.timeout {
            return Ok(());
        }
        let least = self.timeouts.low_speed_limit * elapsed.as_secs().max(1);
        if self.in_window < least {
            return Err(format!(
                "less than {} bytes per second arrived over {} s (CARGO_HTTP_LOW_SPEED_LIMIT)",
                self.timeouts.low_speed_limit,
                elapsed.as_secs()
            ));
        }
        self.window_start = Instant::now();
        self.in_window = 0;
        Ok(())
    }
}

/// A refusal of what a registry sent (too much, too slowly): not worth retrying, and
/// reported as it is (see `errors::describe`).
pub(super) fn refused(message: String) -> OciDistributionError {
    OciDistributionError::SpecViolationError(message)
}

/// Reads `response`'s body whole, up to `limit` bytes and at the pace [`Pace`] asks.
pub(super) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
    timeouts: Timeouts,
) -> std::result::Result<bytes::Bytes, OciDistributionError> {
    let too_big = || {
        refused(format!(
            "the registry sent more than {} MiB for {what}; that is far more than one can hold, so the read was stopped",
            limit >> 20
        ))
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut pace = Pace::new(timeouts);
    let mut body = Vec::new();
    let slow = |why: String| refused(format!("the registry is too slow sending {what}: {why}"));
    while let Some(chunk) = pace.wait(response.chunk()).await.map_err(slow)?? {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
        pace.got(chunk.len()).map_err(slow)?;
    }
    Ok(body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargos_http_config_is_read_when_the_environment_says_nothing() {
        if std::env::var_os("CARGO_HTTP_TIMEOUT").is_some()
            || std::env::var_os("CARGO_HTTP_LOW_SPEED_LIMIT").is_some()
        {
            return; // The environment wins; this test is about the file.
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
        std::fs::write(
            dir.path().join(".cargo/config.toml"),
            "[http]\ntimeout = 7\nlow-speed-limit = 42\n",
        )
        .unwrap();
        let read = Timeouts::from_env_in(dir.path()).unwrap();
        assert_eq!(read.timeout, Duration::from_secs(7));
        assert_eq!(read.low_speed_limit, 42);
    }

    #[test]
    fn cargo_settings_are_read_with_cargo_defaults() {
        assert_eq!(
            Timeouts::from_values(None, None).unwrap(),
            Timeouts::default()
        );
        let t = Timeouts::from_values(Some("5"), Some("0")).unwrap();
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!(t.low_speed_limit, 0);
        assert_eq!(t.document(), Duration::from_secs(20));
        let e = Timeouts::from_values(Some("0"), None).unwrap_err();
        assert!(e.message().contains("CARGO_HTTP_TIMEOUT=`0`"), "{e}");
        assert!(Timeouts::from_values(None, Some("fast")).is_err());
    }

    #[test]
    fn a_window_with_too_few_bytes_ends_the_transfer() {
        let timeouts = Timeouts {
            timeout: Duration::from_millis(0),
            low_speed_limit: 100,
        };
        let mut pace = Pace::new(timeouts);
        assert!(pace.got(1).is_err());
        let mut pace = Pace::new(timeouts);
        assert!(pace.got(100).is_ok());
        let mut pace = Pace::new(Timeouts::default());
        assert!(pace.got(1).is_ok(), "judged only once a window has passed");
    }
}
