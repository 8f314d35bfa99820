//! Bearer tokens from a registry's token service (the distribution spec's token
//! authentication), asked for by our own requests and handed to oci-client.
//!
//! Why not oci-client's `auth()`: it reads the token service's answer whole, however long
//! (a token service that sends without end takes all the memory there is), and it pings
//! `/v2/` again before each token. Here the answer is read a piece at a time and refused
//! past [`TOKEN_LIMIT`], in the time bounds of [`super::limits`]; the token must be a valid
//! header value (oci-client unwraps it into one). oci-client then gets the token through
//! its public token cache, for the operations the connection does, and keeps using it;
//! [`Renewal`] puts a new one there before the old one expires (a long push outlives the
//! 60-300 s most registries give a token).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::{Client, Reference, RegistryOperation};

use super::limits::Timeouts;

/// The most a token service's answer may hold: a token is a few KiB.
pub const TOKEN_LIMIT: usize = 1 << 20;

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub realm: String,
    pub service: Option<String>,
}

impl Bearer {
    /// The bearer challenge in a `WWW-Authenticate` header, read exactly as oci-client
    /// reads it (`http-auth`'s parser; every challenge in the list, the scheme and the
    /// parameter names in any case, the first `Bearer` with a realm): the realm vetted here
    /// is then the one oci-client would use. A header in which oci-client finds none is
    /// one in which this finds none.
    pub fn parse(header: &str) -> Option<Bearer> {
        http_auth::ChallengeParser::new(header)
            .filter_map(|c| c.ok())
            .filter(|c| c.scheme.eq_ignore_ascii_case("Bearer"))
            .find_map(|c| {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .rev()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                Some(Bearer {
                    realm: param("realm")?,
                    service: param("service"),
                })
            })
    }
}

/// When to renew a token that lives `life`: at three quarters of it, not more often than
/// every second (`life / 4 * 3`, which cannot overflow as `life * 3` can).
fn renew_after(life: Duration) -> Duration {
    (life / 4 * 3).max(Duration::from_secs(1))
}

/// A token, and how long it is good for.
#[derive(Clone)]
pub struct Issued {
    pub token: String,
    pub life: Duration,
}

/// The `scope` parameters of a token request: `repository:<name>:pull,push` for a push,
/// and `repository:<from>:pull` for each other repository in `also_pull`.
fn scopes(repository: &str, operation: RegistryOperation, also_pull: &[String]) -> Vec<String> {
    let mut out = vec![format!("repository:{repository}:{}", actions(operation))];
    for from in also_pull {
        let scope = format!("repository:{from}:pull");
        if from != repository && !out.contains(&scope) {
            out.push(scope);
        }
    }
    out
}

/// The scope's actions for `operation`: a push also reads (blob checks, manifests).
fn actions(operation: RegistryOperation) -> &'static str {
    match operation {
        RegistryOperation::Push => "pull,push",
        RegistryOperation::Pull => "pull",
    }
}

/// Asks `bearer`'s token service for a token for `repository` and `operation`, and for
/// pulls from `also_pull` (the repositories blobs are mounted from: Distribution-based
/// registries check the token's pull access to the source of a mount, as Docker's pusher
/// asks for it), with the user's credentials when they are a login (Basic), else
/// anonymously.
pub async fn fetch(
    http: &reqwest::Client,
    bearer: &Bearer,
    repository: &str,
    operation: RegistryOperation,
    also_pull: &[String],
    auth: &RegistryAuth,
    timeouts: Timeouts,
) -> Result<Issued, OciDistributionError> {
    if let RegistryAuth::Bearer(token) = auth {
        // A docker `identitytoken` is used as the registry's token itself, as oci-client
        // does; nothing is asked for.
        return Ok(Issued {
            token: token.clone(),
            life: Duration::from_secs(24 * 60 * 60),
        });
    }
    let deadline = timeouts.document();
    let work = async {
        let scopes = scopes(repository, operation, also_pull);
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(service) = &bearer.service {
            query.push(("service", service));
        }
        let mut request = http.get(&bearer.realm).query(&query);
        if let RegistryAuth::Basic(user, password) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await?;
        let status = response.status();
        let body = super::limits::read_body(
            response,
            TOKEN_LIMIT,
            "a token (from its token service)",
            timeouts,
        )
        .await?;
        match status.as_u16() {
            200 => {}
            401 | 403 => {
                return Err(OciDistributionError::AuthenticationFailure(
                    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                ))
            }
            code => {
                return Err(OciDistributionError::ServerError {
                    code,
                    url: bearer.realm.clone(),
                    message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                })
            }
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| OciDistributionError::RegistryTokenDecodeError(e.to_string()))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                OciDistributionError::RegistryTokenDecodeError(
                    "the answer holds no token".to_string(),
                )
            })?;
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(OciDistributionError::SpecViolationError(
                "the registry's token service sent a token that is not a valid header value"
                    .to_string(),
            ));
        }
        // The spec's default when the service does not say: 60 s.
        // At most a day: a huge `expires_in` would otherwise overflow the renewal's sums.
        let life = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(1, 86_400));
        Ok(Issued { token, life })
    };
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(OciDistributionError::SpecViolationError(format!(
                "the registry's token service did not answer within {} s",
                deadline.as_secs()
            )))
        })
}

/// Gives `client` the token for `target`'s repository and `operations`.
pub async fn hand_over(
    client: &Client,
    target: &Reference,
    operations: &[RegistryOperation],
    token: &str,
) {
    // Also as the registry's stored credentials: what oci-client falls back on if its
    // cache ever misses (it then uses this token rather than ask anyone).
    client
        .store_auth_if_needed(
            target.resolve_registry(),
            &RegistryAuth::Bearer(token.to_string()),
        )
        .await;
    for op in operations {
        client
            .tokens
            .insert(
                target,
                *op,
                RegistryTokenType::Bearer(RegistryToken::Token {
                    token: token.to_string(),
                }),
            )
            .await;
    }
}

/// What a token is renewed for.
pub struct Scope {
    pub http: reqwest::Client,
    pub bearer: Bearer,
    pub target: Reference,
    pub operation: RegistryOperation,
    /// Repositories the token may also read (see [`fetch`]).
    pub also_pull: Vec<String>,
    pub auth: RegistryAuth,
    pub timeouts: Timeouts,
}

/// The operations a token for `operation` serves: a push's also reads (blob checks,
/// manifests).
pub fn operations(operation: RegistryOperation) -> &'static [RegistryOperation] {
    match operation {
        RegistryOperation::Push => &[RegistryOperation::Push, RegistryOperation::Pull],
        RegistryOperation::Pull => &[RegistryOperation::Pull],
    }
}

impl Scope {
    /// Asks the token service for a token for this scope (see [`fetch`]).
    pub async fn fetch(&self) -> Result<Issued, OciDistributionError> {
        fetch(
            &self.http,
            &self.bearer,
            self.target.repository(),
            self.operation,
            &self.also_pull,
            &self.auth,
            self.timeouts,
        )
        .await
    }

    /// Gives `client` `token` for all the scope covers: the target's operations, and
    /// reading each repository of `also_pull`.
    pub async fn hand_over(&self, client: &Client, token: &str) {
        hand_over(client, &self.target, operations(self.operation), token).await;
        for from in &self.also_pull {
            let from = Reference::with_tag(
                self.target.registry().to_string(),
                from.clone(),
                "latest".to_string(),
            );
            hand_over(client, &from, &[RegistryOperation::Pull], token).await;
        }
    }
}

/// Renews a connection's token before it expires, for as long as the connection lives.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    /// Starts renewing `first` (already handed over) into `client` and `tokens`.
    pub fn start(
        client: Client,
        scope: Scope,
        first: &Issued,
        tokens: Arc<Mutex<std::collections::HashMap<String, Option<String>>>>,
    ) -> Renewal {
        let mut life = first.life;
        Renewal(tokio::spawn(async move {
            loop {
                // At three quarters of its life (and not more often than every second).
                tokio::time::sleep(renew_after(life)).await;
                match scope.fetch().await {
                    Ok(issued) => {
                        scope.hand_over(&client, &issued.token).await;
                        if let Ok(mut map) = tokens.lock() {
                            map.insert(
                                scope.target.repository().to_string(),
                                Some(issued.token.clone()),
                            );
                        }
                        life = issued.life;
                    }
                    // Tried again soon; the requests that meet the old token's end say so.
                    Err(_) => life = Duration::from_secs(8),
                }
            }
        }))
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_quoted_commas() {
        assert_eq!(
            Bearer::parse(r#"Bearer realm="https://auth.example/token",service="registry""#),
            Some(Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry".into())
            })
        );
        assert_eq!(
            Bearer::parse(
                r#"Bearer service="s", scope="repository:a:pull,push", Realm="http://127.0.0.1:9/t""#
            ),
            Some(Bearer {
                realm: "http://127.0.0.1:9/t".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(Bearer::parse(r#"Basic realm="registry""#), None);
        assert_eq!(Bearer::parse(r#"Bearer service="s""#), None);
        // As oci-client reads them: the scheme in any case, and a Bearer challenge after
        // another one (both were missed before, and oci-client then used the realm
        // unchecked).
        let plain = Some(Bearer {
            realm: "http://auth.example/t".into(),
            service: None,
        });
        assert_eq!(
            Bearer::parse(r#"bearer realm="http://auth.example/t""#),
            plain
        );
        assert_eq!(
            Bearer::parse(r#"BEARER REALM="http://auth.example/t""#),
            plain
        );
        assert_eq!(
            Bearer::parse(r#"Basic realm="r", Bearer realm="http://auth.example/t""#),
            plain
        );
        assert_eq!(
            Bearer::parse(
                r#"Basic realm="r", bearer realm="http://auth.example/t", charset="UTF-8""#
            ),
            plain
        );
    }

    #[test]
    fn a_token_for_mounts_also_asks_to_read_their_sources() {
        assert_eq!(
            scopes("me/app", RegistryOperation::Push, &[]),
            ["repository:me/app:pull,push"]
        );
        assert_eq!(
            scopes(
                "me/app",
                RegistryOperation::Push,
                &["acme/base".into(), "me/app".into(), "acme/base".into()]
            ),
            ["repository:me/app:pull,push", "repository:acme/base:pull"]
        );
    }

    #[test]
    fn renewal_times_never_overflow() {
        assert_eq!(
            renew_after(Duration::from_secs(300)),
            Duration::from_secs(225)
        );
        assert_eq!(
            renew_after(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
        // Panicked before (`life * 3`).
        assert!(renew_after(Duration::MAX) > Duration::from_secs(1 << 60));
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        use std::io::{Read, Write};
        // A token service whose tokens live for a second: t0, t1, t2, …
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let body = format!(r#"{{"token":"t{n}","expires_in":1}}"#);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let tokens: Arc<Mutex<std::collections::HashMap<String, Option<String>>>> =
            Default::default();
        let shared = tokens.clone();
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::registry::block_on(async move {
            let http = reqwest::Client::new();
            let bearer = Bearer {
                realm: format!("http://127.0.0.1:{port}/token"),
                service: Some("s".into()),
            };
            let timeouts = Timeouts::default();
            let anonymous = RegistryAuth::Anonymous;
            let first = fetch(
                &http,
                &bearer,
                "a/b",
                RegistryOperation::Pull,
                &[],
                &anonymous,
                timeouts,
            )
            .await
            .unwrap();
            assert_eq!(
                (first.token.as_str(), first.life),
                ("t0", Duration::from_secs(1))
            );
            let client = Client::new(oci_client::client::ClientConfig::default());
            let target: Reference = format!("127.0.0.1:{port}/a/b:1").parse().unwrap();
            let renewal = Renewal::start(
                client,
                Scope {
                    http,
                    bearer,
                    target,
                    operation: RegistryOperation::Pull,
                    also_pull: Vec::new(),
                    auth: anonymous,
                    timeouts,
                },
                &first,
                shared,
            );
            tokio::time::sleep(Duration::from_millis(2600)).await;
            drop(renewal);
            Ok(())
        })
        .unwrap();
        let now = tokens.lock().unwrap().get("a/b").cloned().flatten();
        assert!(matches!(now.as_deref(), Some("t2" | "t3")), "{now:?}");
    }
}
