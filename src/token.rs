//! Bound ServiceAccount tokens and the per-audience cache in front of the TokenRequest API.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A bearer token. Its `Debug` prints the length only and it has no `Display`: the value
/// leaves this type in exactly one place, [`Token::expose`], where the header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Token(value.into())
    }

    /// The raw value, for building an `Authorization` header. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes redacted>)", self.0.len())
    }
}

/// A token as the API server issued it, with the expiry it announced.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Token,
    /// `status.expirationTimestamp` of the TokenRequest.
    pub expires_at: SystemTime,
}

/// Something that can mint a token for an audience. Blocking: the cache calls it on a
/// blocking thread. The TokenRequest client implements it; tests can substitute their own.
pub trait TokenSource: Send + Sync + 'static {
    fn request_token(&self, audience: &str) -> Result<IssuedToken, crate::kube::KubeError>;
}

/// Placeholder until the real cache lands.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>) -> TokenCache {
        TokenCache { source }
    }

    pub async fn get(&self, audience: &str) -> Result<Token, crate::kube::KubeError> {
        let source = self.source.clone();
        let audience = audience.to_string();
        async_std::task::spawn_blocking(move || source.request_token(&audience))
            .await
            .map(|t| t.token)
    }
}
