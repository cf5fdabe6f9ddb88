//! A stand-in scrape target for the demo and the benchmarks: answers every request with a
//! Prometheus-style text body and reports which audience the bearer token it received was
//! minted for (the stand-in API server's tokens carry it in the clear; real tokens are JWTs),
//! both as a comment and as the metric `stand_in_target_token_audience{audience="…"} 1`.
//!
//! Usage: `stand_in_target [--listen ADDR] [--body-bytes N] [--tls-cert-dir DIR]`
//!
//! With `--tls-cert-dir`, it serves HTTPS with a certificate for `localhost` and `127.0.0.1`
//! signed by a CA it writes to `DIR/target-ca.crt`. It prints `listening ADDR` once ready.
//! HTTP/1.1 keep-alive, request bodies ignored (it is a scrape target), one thread a
//! connection: enough for a demo and a benchmark reference, not a general server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

struct Options {
    listen: String,
    body_bytes: usize,
    tls_dir: Option<std::path::PathBuf>,
}

fn parse_options() -> Options {
    let mut options = Options {
        listen: "127.0.0.1:0".into(),
        body_bytes: 10 * 1024,
        tls_dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => options.listen = value(),
            "--body-bytes" => options.body_bytes = value().parse().expect("--body-bytes N"),
            "--tls-cert-dir" => options.tls_dir = Some(value().into()),
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// A metrics-like body of about `len` bytes.
fn metrics_body(len: usize) -> String {
    let mut body = String::from("# HELP demo_requests_total Requests served.\n");
    body.push_str("# TYPE demo_requests_total counter\n");
    let mut i = 0;
    loop {
        // Whole lines only: a cut line would make the exposition unparsable.
        let line = format!("demo_requests_total{{handler=\"/h{i:04}\",code=\"200\"}} {i}\n");
        if body.len() + line.len() > len {
            return body;
        }
        body.push_str(&line);
        i += 1;
    }
}

/// `value` escaped for a label value of the text exposition format.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn tls_config(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stand-in target CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("target-ca.crt"), ca.pem()).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn audience_of(authorization: &str) -> &str {
    authorization
        .strip_prefix("Bearer fake-token.")
        .and_then(|rest| rest.rsplit_once('.'))
        .map(|(audience, _)| audience)
        .unwrap_or("-")
}

fn serve<S: Read + Write>(stream: S, body: &str) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split(' ').nth(1).unwrap_or("/").to_string();
        let mut audience = "-".to_string();
        let mut close = line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut field = String::new();
            if reader.read_line(&mut field).unwrap_or(0) == 0 {
                return;
            }
            if field == "\r\n" || field == "\n" {
                break;
            }
            let lower = field.to_ascii_lowercase();
            if lower.starts_with("authorization:") {
                audience = audience_of(field[14..].trim()).to_string();
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let text = format!(
            "# token audience seen by the target: {audience}\n# path: {target}\n\
             # TYPE stand_in_target_token_audience gauge\n\
             stand_in_target_token_audience{{audience=\"{}\"}} 1\n{body}",
            label_value(&audience)
        );
        let connection = if close { "Connection: close\r\n" } else { "" };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n{connection}\r\n{text}",
            text.len()
        );
        let stream = reader.get_mut();
        if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() || close {
            return;
        }
    }
}

fn main() {
    let options = parse_options();
    let listener = TcpListener::bind(&options.listen).expect("bind --listen");
    let tls = options.tls_dir.as_deref().map(tls_config);
    let body: Arc<str> = metrics_body(options.body_bytes).into();
    println!("listening {}", listener.local_addr().unwrap());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let tls = tls.clone();
        std::thread::spawn(move || match tls {
            None => serve(stream, &body),
            Some(config) => {
                let conn = rustls::ServerConnection::new(config).unwrap();
                serve(
                    rustls::StreamOwned::<_, TcpStream>::new(conn, stream),
                    &body,
                );
            }
        });
    }
}
