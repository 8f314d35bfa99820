//! Registry errors as a user reads them: what the registry answered (HTTP status, the
//! codes of its JSON error envelope), turned into one message that names the registry, the
//! repository and the credentials used, and says what to do.

use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::RegistryOperation;

use super::credentials;
use super::limits::ATTEMPTS;
use super::ConnectOptions;
use crate::error::Error;

/// The error and all its sources, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// What the registry answered, when it did: the HTTP status (if known) and the errors of
/// its JSON error envelope (code as on the wire, e.g. `NAME_INVALID`, and message).
fn answer(e: &OciDistributionError) -> (Option<u16>, Vec<(String, String)>) {
    let codes = |envelope: &OciEnvelope| {
        envelope
            .errors
            .iter()
            .map(|x| {
                let code = serde_json::to_value(&x.code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                (code, x.message.clone())
            })
            .collect()
    };
    match e {
        OciDistributionError::RequestError(r) => (r.status().map(|s| s.as_u16()), Vec::new()),
        OciDistributionError::ServerError { code, message, .. } => (
            Some(*code),
            serde_json::from_str::<OciEnvelope>(message)
                .map(|env| codes(&env))
                .unwrap_or_default(),
        ),
        OciDistributionError::RegistryError { envelope, .. } => (None, codes(envelope)),
        OciDistributionError::UnauthorizedError { .. } => (Some(401), Vec::new()),
        _ => (None, Vec::new()),
    }
}

/// Whether `e` is the registry saying there is no such manifest (or tag): a 404, or the
/// error codes of one, which some answers carry without their status.
pub fn is_not_found(e: &OciDistributionError) -> bool {
    let (status, codes) = answer(e);
    status == Some(404)
        || matches!(e, OciDistributionError::ImageManifestNotFoundError(_))
        || codes.iter().any(|(c, _)| {
            matches!(
                c.as_str(),
                "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "NOT_FOUND"
            )
        })
}

/// What a connection was opened for, to say what was refused.
#[derive(Debug, Clone)]
pub struct Purpose {
    pub repository: String,
    pub operation: RegistryOperation,
}

/// Turns a client error into the one message a user sees.
pub fn explain(
    e: OciDistributionError,
    registry: &str,
    credential: &credentials::Found,
    options: &ConnectOptions,
    purpose: &Purpose,
) -> Error {
    describe(&e, registry, credential, options, purpose).with_source(e)
}

/// The message (and help) for `e`; [`explain`] keeps `e` as the source.
fn describe(
    e: &OciDistributionError,
    registry: &str,
    credential: &credentials::Found,
    options: &ConnectOptions,
    purpose: &Purpose,
) -> Error {
    let chain = chain(e);
    let (status, codes) = answer(e);
    let has = |wanted: &[&str]| codes.iter().any(|(c, _)| wanted.contains(&c.as_str()));
    if status == Some(429) || has(&["TOOMANYREQUESTS"]) {
        // Only reached once the retries are used up (429 is transient).
        return Error::registry(format!(
            "the registry {registry} is rate-limiting this client: it still answered 429 Too Many Requests after {ATTEMPTS} attempts"
        ))
        .with_help("wait, then run the same command again: blobs already pushed are not uploaded twice");
    }
    let said = codes
        .iter()
        .map(|(_, m)| m.as_str())
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let repository = &purpose.repository;
    let doing = match purpose.operation {
        RegistryOperation::Push => format!("push to `{repository}`"),
        RegistryOperation::Pull => format!("read `{repository}`"),
    };
    let denied = matches!(e, OciDistributionError::AuthenticationFailure(_))
        || matches!(status, Some(401 | 403))
        || has(&["UNAUTHORIZED", "DENIED"]);
    if denied {
        let who = match credential.credential {
            credentials::Credential::Anonymous => "anonymous access".to_string(),
            _ => format!("the credentials from {}", credential.source),
        };
        return Error::registry(format!(
            "the registry {registry} refused to let {who} {doing}: not authorized"
        ))
        .with_help(format!(
            "log in (`podman login {registry}` or `docker login {registry}`) or fix the credentials (looked in {}); \
             if they are right, check that they may {doing}: registries usually allow pushes only under your own user or organisation",
            credentials::places()
        ));
    }
    if has(&["NAME_INVALID"]) {
        return Error::registry(format!(
            "the registry {registry} rejected the repository name `{repository}`: {said}"
        ))
        .with_help("push to a name this registry accepts (its rules may be stricter than the OCI grammar: lowercase, a namespace you own, a length limit)");
    }
    if has(&["NAME_UNKNOWN"]) {
        return Error::registry(format!(
            "the registry {registry} has no repository `{repository}`: {said}"
        ))
        .with_help("create the repository first (some registries, such as ECR or a Harbor project, do not create one on push), or push to one that exists");
    }
    let lower = chain.to_ascii_lowercase();
    if status.is_none() && (lower.contains("certificate") || lower.contains("tls")) {
        let help = if options.ca_file.is_some() {
            "check that --ca-file holds the CA that signed the registry's certificate".to_string()
        } else {
            "if the registry uses a private CA, pass it with --ca-file PATH".to_string()
        };
        return Error::registry(format!("the TLS connection to {registry} failed: {chain}"))
            .with_help(help);
    }
    if let OciDistributionError::RequestError(r) = e {
        if r.is_connect() || r.is_timeout() {
            return Error::registry(format!("cannot reach the registry {registry}: {chain}"))
                .with_help("check that the registry is running and the address is right, then run the same command again");
        }
    }
    let (verb, help) = match purpose.operation {
        RegistryOperation::Push => (
            "pushing to",
            "run the same command again: blobs already pushed are not uploaded twice",
        ),
        RegistryOperation::Pull => (
            "reading from",
            "check the reference, then run the same command again",
        ),
    };
    if let OciDistributionError::SpecViolationError(why) = e {
        // Our own refusals of what the registry sent (too much, too slowly): as they are.
        let verb = match purpose.operation {
            RegistryOperation::Push => "pushing to",
            RegistryOperation::Pull => "reading from",
        };
        return Error::registry(format!("{verb} {registry} failed: {why}")).with_help(
            "the registry, or something between it and this machine, is misbehaving; if it is only slow, \
             allow more with CARGO_HTTP_TIMEOUT (seconds) and CARGO_HTTP_LOW_SPEED_LIMIT (bytes per second)",
        );
    }
    let what = if said.is_empty() { chain } else { said };
    Error::registry(format!("{verb} {registry} failed: {what}")).with_help(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_that_outlasts_the_retries_is_reported_as_one() {
        let busy = OciDistributionError::ServerError {
            code: 429,
            url: "https://r.example/v2/a/blobs/uploads/".into(),
            message: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.into(),
        };
        let found = credentials::Found {
            credential: credentials::Credential::Anonymous,
            source: "nowhere".into(),
        };
        let purpose = Purpose {
            repository: "a".into(),
            operation: RegistryOperation::Push,
        };
        let e = explain(
            busy,
            "r.example",
            &found,
            &ConnectOptions::default(),
            &purpose,
        );
        assert!(e.message().contains("is rate-limiting this client"), "{e}");
        assert_eq!(e.kind(), &crate::error::Kind::Registry);
    }
}
