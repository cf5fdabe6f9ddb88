//! Log output: the env_logger setup behind `--log-level` and `--log-format`, and
//! [`RedactedHeaders`], the only way header lists reach a log line.
//!
//! Every event is one line on stderr, in logfmt or JSON:
//!
//! ```text
//! ts=2026-01-02T03:04:05.678Z level=info target=proxy msg="listening" addr=127.0.0.1:8080
//! {"ts":"2026-01-02T03:04:05.678Z","level":"info","target":"proxy","msg":"listening","addr":"127.0.0.1:8080"}
//! ```
//!
//! Call sites write a short lowercase phrase followed by `key=value` fields, e.g.
//! `debug!("token cache miss audience={:?}", aud)`; the trailing fields are split off the phrase
//! here (see [`split_fields`]). A value that may contain spaces or comes from the network is
//! written with `{:?}`, so that it arrives quoted and cannot forge further fields.
//!
//! What each level means:
//! - `error`: the proxy cannot serve at all;
//! - `warn`: a request failed for a cluster or configuration reason, or the proxy fell back to
//!   something (an old token, a default);
//! - `info`: start-up facts (listen addresses, CA file, namespace and service account) and
//!   shutdown;
//! - `debug`: one or a few lines per request and per token or certificate cache event;
//! - `trace`: connection internals.
//!
//! No level, `trace` included, ever shows a token, an `Authorization`, `Proxy-Authorization`,
//! `Cookie` or `Set-Cookie` value, a body, the mounted API token or the CA key.
//!
//! `--log-level` applies to this program only. Every other crate is capped at `warn`, because
//! dependencies log request details (ureq prints headers at debug and trace) that can carry
//! credentials. For the same reason `RUST_LOG` is ignored: honouring it would let one
//! environment variable turn a credential injector into a credential logger.
//!
//! This module does not decide what is logged where; each module logs its own events.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::SystemTime;

use log::{LevelFilter, Record};

use crate::timefmt::format_rfc3339_millis;

/// Target prefix of this crate's events (library and binary share the crate name).
const OUR_CRATE: &str = "kube_audience_proxy";

/// Field names the line format uses itself; a trailing field with one of these names stays
/// part of the message instead of overwriting the format's own key.
const RESERVED_KEYS: &[&str] = &["ts", "level", "target", "msg"];

/// Header names whose values are shown in logs. Everything else is shown by name only, since
/// custom headers (`X-Api-Key`, `X-Auth-Token`, ...) carry credentials as often as not.
const SHOWN_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "expect",
    "host",
    "keep-alive",
    "proxy-connection",
    "server",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
];

/// `--log-level`: how much this program logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, `trace` included.
    All,
    /// `debug` and above.
    Debug,
    /// `info` and above: the default.
    Info,
    /// `warn` and `error`.
    Warn,
    /// `error` only.
    Error,
    /// Nothing at all, from any crate.
    None,
}

impl LogLevel {
    /// The spellings `--log-level` accepts, in the order help text lists them.
    pub const NAMES: &'static str = "all, debug, info, warn, error, none";

    /// The filter for this crate's events.
    pub fn filter(self) -> LevelFilter {
        match self {
            LogLevel::All => LevelFilter::Trace,
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Warn => LevelFilter::Warn,
            LogLevel::Error => LevelFilter::Error,
            LogLevel::None => LevelFilter::Off,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Parses one of [`LogLevel::NAMES`]; fails with a message listing them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(LogLevel::All),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "none" => Ok(LogLevel::None),
            _ => Err(format!(
                "unknown log level, expected one of {}",
                LogLevel::NAMES
            )),
        }
    }
}

/// `--log-format`: how each event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `ts=… level=info target=proxy msg="…" key=value`.
    Logfmt,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    /// Parses `logfmt` or `json`; fails with a message listing them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logfmt" => Ok(LogFormat::Logfmt),
            "json" => Ok(LogFormat::Json),
            _ => Err("unknown log format, expected logfmt or json".to_string()),
        }
    }
}

/// Installs the process-wide logger: `level` for this crate, at most `warn` for every other
/// crate, `format` for every line, all on stderr.
///
/// Does nothing if a logger is already installed (a second call, or a test harness's logger).
pub fn init(level: LogLevel, format: LogFormat) {
    let ours = level.filter();
    let others = ours.min(LevelFilter::Warn);
    let _ = env_logger::Builder::new()
        .filter_level(others)
        .filter_module(OUR_CRATE, ours)
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let line = format_record(format, SystemTime::now(), record);
            buf.write_all(line.as_bytes())
        })
        .try_init();
}

/// One event as a complete line, newline included.
fn format_record(format: LogFormat, now: SystemTime, record: &Record<'_>) -> String {
    let text = record.args().to_string();
    let (msg, fields) = split_fields(&text);
    let level = record.level().as_str().to_ascii_lowercase();
    let target = short_target(record.target());
    let ts = format_rfc3339_millis(now);
    match format {
        LogFormat::Logfmt => format_logfmt(&ts, &level, target, msg, &fields),
        LogFormat::Json => format_json(&ts, &level, target, msg, &fields),
    }
}

/// The module path without this crate's name: `proxy::connect`, or `kube_audience_proxy` for
/// the crate root; other crates' targets are kept whole.
fn short_target(target: &str) -> &str {
    target
        .strip_prefix(OUR_CRATE)
        .and_then(|rest| rest.strip_prefix("::"))
        .unwrap_or(target)
}

fn format_logfmt(ts: &str, level: &str, target: &str, msg: &str, fields: &[Field]) -> String {
    let mut line = format!("ts={ts} level={level} target={target} msg={msg:?}");
    for field in fields {
        line.push(' ');
        line.push_str(field.key);
        line.push('=');
        match &field.value {
            FieldValue::Bare(v) => line.push_str(v),
            FieldValue::Quoted(v) => line.push_str(&format!("{v:?}")),
        }
    }
    line.push('\n');
    line
}

fn format_json(ts: &str, level: &str, target: &str, msg: &str, fields: &[Field]) -> String {
    // Built by hand so the key order is fixed; serde_json only escapes the strings.
    let quote = |s: &str| serde_json::to_string(s).expect("a string always serialises");
    let mut line = format!(
        "{{\"ts\":{},\"level\":{},\"target\":{},\"msg\":{}",
        quote(ts),
        quote(level),
        quote(target),
        quote(msg)
    );
    for field in fields {
        let value = match &field.value {
            FieldValue::Bare(v) => v,
            FieldValue::Quoted(v) => v.as_str(),
        };
        line.push_str(&format!(",{}:{}", quote(field.key), quote(value)));
    }
    line.push_str("}\n");
    line
}

/// One trailing `key=value` of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name before `=`.
    pub key: &'a str,
    /// What follows `=`.
    pub value: FieldValue<'a>,
}

/// A field's value as written in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// `key=value`: no whitespace, no quotes.
    Bare(&'a str),
    /// `key="..."`, unescaped (Rust `Debug` escapes: `\"`, `\\`, `\n`, `\t`, `\r`, `\0`,
    /// `\'`, `\u{…}`).
    Quoted(String),
}

/// Splits a message into its phrase and its trailing `key=value` fields.
///
/// A key is a lowercase ASCII letter followed by lowercase letters, digits, `_`, `-` or `.`,
/// and not one of the format's own keys. A value is either bare (up to the next whitespace,
/// with no quote or control character) or a `Debug`-quoted string. Only the run of fields at
/// the end counts: a word that looks like a field but is followed by plain words stays in the
/// phrase, as does `=x`, whose key is empty. The phrase is trimmed.
pub fn split_fields(text: &str) -> (&str, Vec<Field<'_>>) {
    let mut fields = Vec::new();
    let mut phrase_end = 0;
    let mut pos = 0;
    let bytes = text.as_bytes();
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos == bytes.len() {
            break;
        }
        let start = pos;
        match parse_field(&text[start..]) {
            Some((field, len)) => {
                fields.push(field);
                pos = start + len;
            }
            None => {
                // A plain word: every field seen so far was part of the phrase.
                fields.clear();
                pos = text[start..]
                    .find(|c: char| c.is_ascii_whitespace())
                    .map_or(text.len(), |n| start + n);
                phrase_end = pos;
            }
        }
    }
    (text[..phrase_end].trim(), fields)
}

/// Parses one `key=value` at the start of `text`; returns it and its length in bytes.
fn parse_field(text: &str) -> Option<(Field<'_>, usize)> {
    let (key, rest) = text.split_once('=')?;
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-' | '.'));
    if !first_ok || !rest_ok || RESERVED_KEYS.contains(&key) {
        return None;
    }
    let value_start = key.len() + 1;
    if let Some(quoted) = rest.strip_prefix('"') {
        let (value, len) = unquote(quoted)?;
        let end = value_start + 1 + len;
        let at_word_end = text[end..]
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_whitespace());
        at_word_end.then_some((
            Field {
                key,
                value: FieldValue::Quoted(value),
            },
            end,
        ))
    } else {
        let len = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let value = &rest[..len];
        if value.contains('"') || value.contains(char::is_control) {
            return None;
        }
        Some((
            Field {
                key,
                value: FieldValue::Bare(value),
            },
            value_start + len,
        ))
    }
}

/// Reads a `Debug`-quoted string body up to its closing quote (`text` starts after the
/// opening one); returns the unescaped value and the bytes consumed, closing quote included.
/// `None` if the quote is never closed or an escape is not one `Debug` writes.
fn unquote(text: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, i + 1)),
            '\\' => {
                let (_, escaped) = chars.next()?;
                value.push(match escaped {
                    '"' => '"',
                    '\\' => '\\',
                    '\'' => '\'',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'u' => {
                        let (_, '{') = chars.next()? else {
                            return None;
                        };
                        let mut hex = String::new();
                        loop {
                            let (_, h) = chars.next()?;
                            if h == '}' {
                                break;
                            }
                            hex.push(h);
                        }
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                    }
                    _ => return None,
                });
            }
            _ => value.push(c),
        }
    }
    None
}

/// A header list for a log line: values of well-known, harmless headers (see the allow-list
/// in this module) are shown; every other header appears by name with `<redacted>`.
/// `authorization`, `proxy-authorization`, `cookie` and `set-cookie` are never on the list.
///
/// `Display` writes `host: example.com, authorization: <redacted>`; `Debug` writes the same
/// text quoted, which is the form to use as a field value: `debug!("request headers={:?}", …)`.
/// Names compare case-insensitively and are printed as given; values that are not UTF-8 are
/// printed lossily.
#[derive(Clone, Copy)]
pub struct RedactedHeaders<'a>(pub &'a [(&'a str, &'a [u8])]);

impl fmt::Display for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let shown = SHOWN_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(name));
            if shown {
                write!(f, "{name}: {}", String::from_utf8_lossy(value))?;
            } else {
                write!(f, "{name}: <redacted>")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn bare<'a>(key: &'a str, value: &'a str) -> Field<'a> {
        Field {
            key,
            value: FieldValue::Bare(value),
        }
    }

    fn quoted<'a>(key: &'a str, value: &str) -> Field<'a> {
        Field {
            key,
            value: FieldValue::Quoted(value.to_string()),
        }
    }

    #[test]
    fn splits_trailing_fields() {
        let (msg, fields) = split_fields("listening addr=127.0.0.1:8080 tls=false");
        assert_eq!(msg, "listening");
        assert_eq!(
            fields,
            [bare("addr", "127.0.0.1:8080"), bare("tls", "false")]
        );
    }

    #[test]
    fn message_without_fields() {
        assert_eq!(split_fields("shutting down"), ("shutting down", vec![]));
        assert_eq!(split_fields(""), ("", vec![]));
    }

    #[test]
    fn quoted_values_with_spaces_and_escapes() {
        let text = r#"token request failed audience="a b" error="boom: \"x\" \\ y\n" status=403"#;
        let (msg, fields) = split_fields(text);
        assert_eq!(msg, "token request failed");
        assert_eq!(
            fields,
            [
                quoted("audience", "a b"),
                quoted("error", "boom: \"x\" \\ y\n"),
                bare("status", "403")
            ]
        );
        let (_, fields) = split_fields(r#"x host="caf\u{e9}""#);
        assert_eq!(fields, [quoted("host", "café")]);
    }

    #[test]
    fn equals_inside_the_phrase_stays_in_the_phrase() {
        let (msg, fields) = split_fields("set a=b because Foo=bar =x key=v");
        assert_eq!(msg, "set a=b because Foo=bar =x");
        assert_eq!(fields, [bare("key", "v")]);
        // Fields followed by a plain word are phrase too.
        assert_eq!(split_fields("a=1 then b").0, "a=1 then b");
    }

    #[test]
    fn malformed_quotes_and_reserved_keys_stay_in_the_phrase() {
        assert_eq!(split_fields(r#"oops error="unclosed"#).1, vec![]);
        assert_eq!(split_fields(r#"oops error="a"b"#).1, vec![]);
        assert_eq!(split_fields(r#"oops error=a"b"#).1, vec![]);
        let (msg, fields) = split_fields("forged level=error msg=hi");
        assert_eq!(msg, "forged level=error msg=hi");
        assert!(fields.is_empty());
    }

    fn record_line(format: LogFormat, target: &str, text: &str) -> String {
        let now = UNIX_EPOCH + Duration::from_millis(1_767_323_045_678);
        format_record(
            format,
            now,
            &Record::builder()
                .args(format_args!("{text}"))
                .level(log::Level::Info)
                .target(target)
                .build(),
        )
    }

    #[test]
    fn logfmt_line() {
        let line = record_line(
            LogFormat::Logfmt,
            "kube_audience_proxy::proxy",
            r#"listening addr=127.0.0.1:8080 error="a \"b\"""#,
        );
        assert_eq!(
            line,
            "ts=2026-01-02T03:04:05.678Z level=info target=proxy msg=\"listening\" \
             addr=127.0.0.1:8080 error=\"a \\\"b\\\"\"\n"
        );
    }

    #[test]
    fn json_line() {
        let line = record_line(
            LogFormat::Json,
            "kube_audience_proxy::proxy::connect",
            "listening\nnow addr=127.0.0.1:8080 error=\"x\\ty\"",
        );
        assert_eq!(
            line,
            "{\"ts\":\"2026-01-02T03:04:05.678Z\",\"level\":\"info\",\
             \"target\":\"proxy::connect\",\"msg\":\"listening\\nnow\",\
             \"addr\":\"127.0.0.1:8080\",\"error\":\"x\\ty\"}\n"
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["error"], "x\ty");
    }

    #[test]
    fn every_line_is_one_line() {
        for format in [LogFormat::Logfmt, LogFormat::Json] {
            let line = record_line(format, "x", "a\nb c=\"d\ne\" f=g\rh");
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(line.ends_with('\n'));
            assert!(!line.contains('\r'));
        }
    }

    #[test]
    fn targets_lose_the_crate_prefix_only() {
        assert_eq!(short_target("kube_audience_proxy::token"), "token");
        assert_eq!(short_target("kube_audience_proxy"), "kube_audience_proxy");
        assert_eq!(short_target("ureq::unversioned"), "ureq::unversioned");
        assert_eq!(
            short_target("kube_audience_proxyx::a"),
            "kube_audience_proxyx::a"
        );
    }

    #[test]
    fn levels_and_formats_parse() {
        assert_eq!("all".parse(), Ok(LogLevel::All));
        assert_eq!(
            "none".parse::<LogLevel>().unwrap().filter(),
            LevelFilter::Off
        );
        assert_eq!(
            "all".parse::<LogLevel>().unwrap().filter(),
            LevelFilter::Trace
        );
        assert!("INFO"
            .parse::<LogLevel>()
            .unwrap_err()
            .contains(LogLevel::NAMES));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn redacted_headers_never_show_credentials() {
        let token = "fake-token-abc123";
        let bearer = format!("Bearer {token}");
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"example.com"),
            ("Authorization", bearer.as_bytes()),
            ("proxy-authorization", bearer.as_bytes()),
            ("Cookie", token.as_bytes()),
            ("set-cookie", token.as_bytes()),
            ("X-Api-Key", token.as_bytes()),
            ("content-length", b"12"),
        ];
        let shown = RedactedHeaders(headers);
        for text in [shown.to_string(), format!("{shown:?}")] {
            assert!(!text.contains(token), "{text}");
        }
        assert_eq!(
            shown.to_string(),
            "Host: example.com, Authorization: <redacted>, proxy-authorization: <redacted>, \
             Cookie: <redacted>, set-cookie: <redacted>, X-Api-Key: <redacted>, \
             content-length: 12"
        );
        let line = format!("request headers={shown:?}");
        let (_, fields) = split_fields(&line);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].key, "headers");
    }
}
