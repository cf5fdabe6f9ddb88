//! Runs the fake Kubernetes API server of the integration tests as a process, for demos
//! and manual testing: it answers TokenRequests for one service account over HTTPS and
//! writes its CA certificate and the mounted API token into a directory.
//!
//! ```text
//! cargo run --example stand_in_apiserver -- --listen 127.0.0.1:6443 --dir /tmp/kube \
//!     [--namespace monitoring] [--service-account prometheus] [--token-lifetime-seconds 30]
//! ```
//!
//! It prints `url=…`, `ca_file=…`, `token_file=…`, `namespace=…` and `service_account=…`
//! lines on stdout and runs until killed. Every token it issues is a fake.

#[path = "../tests/common/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;
#[path = "../tests/common/tempdir.rs"]
#[allow(dead_code)]
mod tempdir;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apiserver::FakeApiServer;

const USAGE: &str = "usage: stand_in_apiserver [--listen ADDR] [--dir DIR] [--namespace NS] \
[--service-account NAME] [--token-lifetime-seconds N]";

fn main() -> ExitCode {
    let _ = env_logger::builder().try_init();
    let mut builder = FakeApiServer::builder();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(value) = args.next() else {
            eprintln!("stand_in_apiserver: {flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        builder = match flag.as_str() {
            "--listen" => match value.parse::<SocketAddr>() {
                Ok(addr) => builder.listen(addr),
                Err(e) => return usage_error(&flag, &value, &e.to_string()),
            },
            "--dir" => {
                let dir = PathBuf::from(&value);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    return usage_error(&flag, &value, &e.to_string());
                }
                builder.dir(dir)
            }
            "--namespace" => builder.namespace(&value),
            "--service-account" => builder.service_account(&value),
            "--token-lifetime-seconds" => match value.parse::<u64>() {
                Ok(secs) => builder.token_lifetime(Duration::from_secs(secs)),
                Err(e) => return usage_error(&flag, &value, &e.to_string()),
            },
            _ => {
                eprintln!("stand_in_apiserver: unknown flag {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
    }

    let server = builder.start();
    let settings = server.api_settings();
    println!("url={}", server.url());
    println!("ca_file={}", server.ca_file().display());
    println!("token_file={}", server.token_file().display());
    println!("namespace={}", settings.namespace);
    println!("service_account={}", settings.service_account);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn usage_error(flag: &str, value: &str, why: &str) -> ExitCode {
    eprintln!("stand_in_apiserver: invalid {flag} {value:?}: {why}\n{USAGE}");
    ExitCode::from(2)
}
