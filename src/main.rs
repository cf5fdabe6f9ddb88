//! The `kube-audience-proxy` binary: parses flags, sets up logging, validates the
//! configuration and hands it to [`kube_audience_proxy::run`]. Everything else lives in the
//! library.
//!
//! Exit codes:
//! - `0`: the proxy stopped on SIGTERM or SIGINT, or `--help` was printed;
//! - `1`: the proxy failed while starting its listeners or while running;
//! - `2`: bad flags (argh's message) or a bad configuration, as one line on stderr.
//!
//! Errors that end the process are one stderr line, `kube-audience-proxy: ` followed by the
//! error and its causes joined with `: `. Log levels are described in
//! [`kube_audience_proxy::logging`].

use std::error::Error;
use std::process::ExitCode;

use log::warn;

use kube_audience_proxy::cli::{self, COMMAND_NAME};
use kube_audience_proxy::config::Config;
use kube_audience_proxy::logging;

/// Exit status for bad flags or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status for a failure after the configuration was accepted.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let mut words = Vec::new();
    for word in std::env::args_os().skip(1) {
        match word.into_string() {
            Ok(word) => words.push(word),
            Err(word) => {
                eprintln!("{COMMAND_NAME}: argument is not UTF-8: {word:?}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }

    let parsed = match cli::parse_args(&words) {
        Ok(parsed) => parsed,
        Err(exit) if exit.status.is_ok() => {
            print!("{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            eprintln!("{COMMAND_NAME}: {}", exit.output.trim_end());
            return ExitCode::from(EXIT_USAGE);
        }
    };

    logging::init(parsed.args.log_level, parsed.args.log_format);
    if !parsed.ignored_flags.is_empty() {
        warn!(
            "ignoring flags of the earlier implementation flags={}",
            parsed.ignored_flags.join(",")
        );
    }

    let config = match Config::from_args(parsed.args, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{COMMAND_NAME}: {}", error_chain(&err));
            return ExitCode::from(EXIT_USAGE);
        }
    };

    match kube_audience_proxy::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{COMMAND_NAME}: {}", error_chain(&err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// An error and its sources, outermost first, joined with `: `.
fn error_chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
