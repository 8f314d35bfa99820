//! The retry policy for registry requests: which failures are worth another attempt
//! (connection trouble, timeouts, 429 and 5xx — never a certificate that does not verify),
//! and how long to wait: capped exponential backoff with jitter. A registry's
//! `Retry-After` header is not seen: oci-client (0.18, the newest release) keeps the status
//! and body of an error response but not its headers.

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::errors::chain;
use super::limits::ATTEMPTS;
use crate::shell::Shell;

/// Whether an error is worth retrying: connection trouble, timeouts, 429 and 5xx — but not
/// a certificate that does not verify, which no retry fixes.
pub fn transient(e: &OciDistributionError) -> bool {
    if chain(e).to_ascii_lowercase().contains("certificate") {
        return false;
    }
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_body()
                || r.is_request()
                || r.status()
                    .is_some_and(|s| s.as_u16() == 429 || s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Whether the server answered with an HTTP status (so the protocol itself works).
pub fn answered(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => r.status().is_some(),
        OciDistributionError::ServerError { .. }
        | OciDistributionError::RegistryError { .. }
        | OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        _ => false,
    }
}

/// The wait before attempt `attempt + 1`: 250 ms doubling per attempt, capped at
/// [`LONGEST_BACKOFF`], plus up to half of that again as jitter (so parallel uploads that
/// failed together do not return together).
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250u64 << attempt.min(8)).min(LONGEST_BACKOFF);
    base + jitter(base / 2)
}

/// The cap of one backoff step (before jitter).
const LONGEST_BACKOFF: Duration = Duration::from_secs(8);

/// A random wait in `0..=most`.
fn jitter(most: Duration) -> Duration {
    let most = u64::try_from(most.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(fastrand::u64(0..=most))
}

/// Runs `op` until it succeeds, fails for good, or runs out of attempts.
pub async fn retry<T, F, Fut>(
    what: &str,
    shell: &Shell,
    mut op: F,
) -> std::result::Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && attempt + 1 < ATTEMPTS => {
                let wait = backoff(attempt);
                shell.status(
                    "Retrying",
                    format!("{what} in {:.1} s ({e})", wait.as_secs_f64()),
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) < Duration::from_millis(400));
        assert!(backoff(3) >= Duration::from_millis(2000));
        for attempt in [6, 10, 40] {
            let wait = backoff(attempt);
            assert!(
                wait >= LONGEST_BACKOFF && wait <= LONGEST_BACKOFF * 3 / 2,
                "{wait:?}"
            );
        }
    }

    #[test]
    fn what_is_transient() {
        let busy = OciDistributionError::ServerError {
            code: 429,
            url: "https://r.example/v2/a/blobs/uploads/".into(),
            message: String::new(),
        };
        assert!(transient(&busy));
        let denied = OciDistributionError::UnauthorizedError { url: "u".into() };
        assert!(!transient(&denied));
    }
}
