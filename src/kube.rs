//! The TokenRequest client.

/// A failed TokenRequest.
#[derive(Debug, Clone)]
pub enum KubeError {}

impl std::fmt::Display for KubeError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}
impl std::error::Error for KubeError {}
