//! The pure part of forwarding: parsing request targets, taking the audience parameter out,
//! and rewriting header fields in both directions. No I/O here, so all of it is unit-tested.

use std::fmt;

use crate::http1::{BodyKind, Header};
use crate::token::Token;

/// Longest audience accepted, in bytes. Kubernetes sets no limit, but an audience is a short
/// identifier (a URL or a name); anything longer is a mistake or an attack on the cache.
pub const MAX_AUDIENCE_BYTES: usize = 1024;

/// A request target or header that cannot be forwarded; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteError(pub String);

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RewriteError {}

fn bad(message: impl Into<String>) -> RewriteError {
    RewriteError(message.into())
}

/// The parts of an absolute-form target, `http://host:port/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteTarget<'a> {
    pub tls: bool,
    /// As written, IPv6 brackets included.
    pub host: &'a str,
    pub port: u16,
    /// `host[:port]` as written, for a `Host` field when the client sent none.
    pub authority: &'a str,
    /// Everything from the first `/` or `?` on; `/` when the target had no path.
    pub path_and_query: &'a str,
}

/// Parses an absolute-form request target. Origin-form (`/metrics`) and other forms are
/// refused: they are addressed to the proxy itself, not through it.
pub fn parse_absolute(target: &str) -> Result<AbsoluteTarget<'_>, RewriteError> {
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(bad(format!(
            "not a proxy request: the target {target:?} is not an absolute http:// URL"
        )));
    };
    let tls = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return Err(bad(format!(
            "unsupported scheme {scheme:?}: use http:// or CONNECT"
        )));
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(split);
    let (host, port) = parse_authority(authority, if tls { 443 } else { 80 })?;
    let path_and_query = match path_and_query.as_bytes().first() {
        None => "/",
        Some(b'/') => path_and_query,
        // `http://host?x` has an empty path: the request line needs `/?x`, returned by the
        // caller; we keep the query as written and let `origin_target` add the slash.
        _ => path_and_query,
    };
    Ok(AbsoluteTarget {
        tls,
        host,
        port,
        authority,
        path_and_query,
    })
}

/// Parses `host[:port]` (IPv6 in brackets). `default_port` applies when the port is missing;
/// `None` makes the port required, as for CONNECT.
pub fn parse_authority(
    authority: &str,
    default_port: impl Into<Option<u16>>,
) -> Result<(&str, u16), RewriteError> {
    let default_port = default_port.into();
    if authority.is_empty() {
        return Err(bad("the target has no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in the target URL are not supported"));
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or_else(|| bad(format!("unclosed '[' in {authority:?}")))?;
        let (host, rest) = authority.split_at(close + 1);
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad(format!("unexpected text after ']' in {authority:?}"))),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~[]:%".contains(&b));
    if !valid_host {
        return Err(bad(format!("invalid host {host:?}")));
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(format!("invalid port {p:?}")))?,
        (None, Some(d)) => d,
        (None, None) => return Err(bad(format!("{authority:?} has no port"))),
    };
    Ok((host, port))
}

/// The target with the audience parameter taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The decoded audience, when the parameter was present.
    pub audience: Option<String>,
    /// The origin-form target to send upstream: every other byte as the client sent it.
    pub target: String,
}

/// Takes the `param` query parameter out of `path_and_query`, keeping the order and encoding
/// of everything else. Refuses a repeated, empty or undecodable audience: guessing which one
/// was meant could hand a token to the wrong place.
pub fn extract_audience(path_and_query: &str, param: &str) -> Result<Extracted, RewriteError> {
    let (before_fragment, fragment) = match path_and_query.find('#') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    let path = if path.is_empty() { "/" } else { path };

    let mut audience = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(name).as_deref() != Some(param.as_bytes()) {
            kept.push(pair);
            continue;
        }
        if audience.is_some() {
            return Err(bad(format!("more than one {param} parameter")));
        }
        audience = Some(decode_audience(value, param)?);
    }

    let mut target = String::with_capacity(path_and_query.len());
    target.push_str(path);
    if audience.is_none() {
        // Nothing removed: pass the query through untouched, even a bare `?` or `&&`.
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
    } else if kept.iter().any(|p| !p.is_empty()) || kept.len() > 1 {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    target.push_str(fragment);
    Ok(Extracted { audience, target })
}

fn decode_audience(value: &str, param: &str) -> Result<String, RewriteError> {
    let bytes =
        form_decode(value).ok_or_else(|| bad(format!("invalid percent-encoding in {param}")))?;
    let audience =
        String::from_utf8(bytes).map_err(|_| bad(format!("{param} is not valid UTF-8")))?;
    if audience.is_empty() {
        return Err(bad(format!("empty {param} parameter")));
    }
    if audience.len() > MAX_AUDIENCE_BYTES {
        return Err(bad(format!(
            "{param} is longer than {MAX_AUDIENCE_BYTES} bytes"
        )));
    }
    if audience.chars().any(char::is_control) {
        return Err(bad(format!("{param} contains control characters")));
    }
    Ok(audience)
}

/// Decodes `application/x-www-form-urlencoded` text: `%XX` escapes and `+` for space.
/// `None` for a broken escape.
fn form_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1), plus the framing
/// fields we set ourselves. `Proxy-Authorization` is meant for us and must not travel on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
];

/// Whether a field must not be forwarded: hop-by-hop, or named by `Connection`.
fn is_hop_by_hop(field: &Header, connection_names: &[Vec<u8>]) -> bool {
    HOP_BY_HOP.iter().any(|n| field.is(n))
        || connection_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(field.name.as_bytes()))
}

fn connection_names(headers: &[Header]) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|h| h.is("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii().to_vec())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The framing field for a body forwarded with `kind`.
fn framing_field(kind: BodyKind) -> Option<Header> {
    match kind {
        BodyKind::Length(n) => Some(Header::new("Content-Length", n.to_string())),
        BodyKind::Chunked => Some(Header::new("Transfer-Encoding", "chunked")),
        BodyKind::None | BodyKind::UntilClose => None,
    }
}

/// The request fields to send upstream: hop-by-hop fields and `Expect` removed (the proxy
/// answers `100 Continue` itself), `Authorization` replaced when there is a token, `Host` kept
/// as the client sent it or added from the target, framing set for `body`.
pub fn upstream_request_headers(
    headers: &[Header],
    token: Option<&Token>,
    host_fallback: &str,
    body: BodyKind,
) -> Vec<Header> {
    let named = connection_names(headers);
    let mut out: Vec<Header> = Vec::with_capacity(headers.len() + 2);
    let mut has_host = false;
    for field in headers {
        if is_hop_by_hop(field, &named) || field.is("expect") {
            continue;
        }
        if token.is_some() && field.is("authorization") {
            continue;
        }
        has_host |= field.is("host");
        out.push(field.clone());
    }
    if !has_host {
        out.insert(0, Header::new("Host", host_fallback));
    }
    if let Some(token) = token {
        let mut value = Vec::with_capacity(7 + token.expose().len());
        value.extend_from_slice(b"Bearer ");
        value.extend_from_slice(token.expose().as_bytes());
        out.push(Header::new("Authorization", value));
    }
    out.extend(framing_field(body));
    out
}

/// The response fields to send to the client. `body` is how the proxy frames the body
/// towards the client; for a response without a body (`HEAD`, 204, 304) the upstream's
/// `Content-Length` is kept, since it describes the resource, not this message.
pub fn client_response_headers(headers: &[Header], body: BodyKind, close: bool) -> Vec<Header> {
    let named = connection_names(headers);
    let mut out: Vec<Header> = Vec::with_capacity(headers.len() + 2);
    for field in headers {
        let keep_length = body == BodyKind::None && field.is("content-length");
        if is_hop_by_hop(field, &named) && !keep_length {
            continue;
        }
        out.push(field.clone());
    }
    out.extend(framing_field(body));
    if close {
        out.push(Header::new("Connection", "close"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "kubernetes-audience";

    fn ex(t: &str) -> Extracted {
        extract_audience(t, P).unwrap()
    }

    #[test]
    fn absolute_targets_parse() {
        let t = parse_absolute("http://Target:9090/metrics?a=1").unwrap();
        assert_eq!(
            (t.tls, t.host, t.port, t.authority),
            (false, "Target", 9090, "Target:9090")
        );
        assert_eq!(t.path_and_query, "/metrics?a=1");
        let t = parse_absolute("HTTPS://[fd00::1]/").unwrap();
        assert_eq!((t.tls, t.host, t.port), (true, "[fd00::1]", 443));
        let t = parse_absolute("http://h").unwrap();
        assert_eq!((t.port, t.path_and_query), (80, "/"));
        let t = parse_absolute("http://h?x=1").unwrap();
        assert_eq!(t.path_and_query, "?x=1");
    }

    #[test]
    fn non_proxy_targets_are_refused() {
        for bad in [
            "/metrics",
            "*",
            "ftp://h/",
            "http:///x",
            "http://u:p@h/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://[::1/",
            "http://a b/",
        ] {
            assert!(parse_absolute(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn authority_form_needs_a_port() {
        assert_eq!(parse_authority("h:443", None).unwrap(), ("h", 443));
        assert_eq!(
            parse_authority("[::1]:8443", None).unwrap(),
            ("[::1]", 8443)
        );
        assert!(parse_authority("h", None).is_err());
    }

    #[test]
    fn audience_is_removed_and_the_rest_kept_byte_for_byte() {
        assert_eq!(
            ex("/m?a=%2F&kubernetes-audience=aud&b=x+y&c"),
            Extracted {
                audience: Some("aud".into()),
                target: "/m?a=%2F&b=x+y&c".into()
            }
        );
        assert_eq!(ex("/m?kubernetes-audience=aud").target, "/m");
        assert_eq!(ex("/m?kubernetes-audience=aud&z=1").target, "/m?z=1");
        assert_eq!(ex("/m?z=1&kubernetes-audience=aud").target, "/m?z=1");
        assert_eq!(ex("?kubernetes-audience=aud").target, "/");
        assert_eq!(ex("/m?a&&kubernetes-audience=x&").target, "/m?a&&");
        assert_eq!(ex("/m?a=1#frag").target, "/m?a=1#frag");
    }

    #[test]
    fn targets_without_the_parameter_pass_unchanged() {
        for t in [
            "/",
            "/m?",
            "/m?&&",
            "/m?x=kubernetes-audience",
            "/p%20q?a=%zz",
        ] {
            let e = ex(t);
            assert_eq!((e.audience, e.target.as_str()), (None, t));
        }
    }

    #[test]
    fn audiences_are_decoded() {
        assert_eq!(
            ex("/?kubernetes-audience=https%3A%2F%2Fkubernetes.default.svc").audience,
            Some("https://kubernetes.default.svc".into())
        );
        assert_eq!(ex("/?kubernetes-audience=a+b").audience, Some("a b".into()));
        assert_eq!(ex("/?kubernetes%2Daudience=x").audience, Some("x".into()));
    }

    #[test]
    fn odd_audiences_are_refused() {
        let long = format!("/?{P}={}", "a".repeat(MAX_AUDIENCE_BYTES + 1));
        for t in [
            "/?kubernetes-audience=",
            "/?kubernetes-audience",
            "/?kubernetes-audience=a&kubernetes-audience=b",
            "/?kubernetes-audience=%zz",
            "/?kubernetes-audience=%ff",
            "/?kubernetes-audience=a%0Ab",
            long.as_str(),
        ] {
            assert!(extract_audience(t, P).is_err(), "{t:?} was accepted");
        }
    }

    fn names(headers: &[Header]) -> Vec<String> {
        headers
            .iter()
            .map(|h| h.name.to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn request_headers_lose_hop_by_hop_fields_and_gain_the_token() {
        let token = Token::new("fake-token");
        let input = vec![
            Header::new("Host", "t:1"),
            Header::new("Connection", "keep-alive, X-Private"),
            Header::new("X-Private", "p"),
            Header::new("Keep-Alive", "timeout=5"),
            Header::new("Proxy-Connection", "keep-alive"),
            Header::new("Proxy-Authorization", "Basic eHg="),
            Header::new("TE", "trailers"),
            Header::new("Trailer", "x"),
            Header::new("Upgrade", "h2c"),
            Header::new("Transfer-Encoding", "chunked"),
            Header::new("Expect", "100-continue"),
            Header::new("Authorization", "Bearer client-supplied"),
            Header::new("Accept", "text/plain"),
        ];
        let out = upstream_request_headers(&input, Some(&token), "t:1", BodyKind::Chunked);
        assert_eq!(
            names(&out),
            ["host", "accept", "authorization", "transfer-encoding"]
        );
        assert_eq!(out[2].value, b"Bearer fake-token");
        assert_eq!(out[0].value, b"t:1");
    }

    #[test]
    fn without_a_token_authorization_passes_and_host_is_added() {
        let input = vec![Header::new("Authorization", "Basic abc")];
        let out = upstream_request_headers(&input, None, "t:8080", BodyKind::Length(3));
        assert_eq!(names(&out), ["host", "authorization", "content-length"]);
        assert_eq!(out[0].value, b"t:8080");
        assert_eq!(out[1].value, b"Basic abc");
        assert_eq!(out[2].value, b"3");
    }

    #[test]
    fn response_headers_keep_the_length_of_bodiless_responses() {
        let input = vec![
            Header::new("Content-Length", "42"),
            Header::new("Connection", "close"),
            Header::new("Content-Type", "text/plain"),
        ];
        let out = client_response_headers(&input, BodyKind::None, false);
        assert_eq!(names(&out), ["content-length", "content-type"]);
        let out = client_response_headers(&input, BodyKind::Chunked, true);
        assert_eq!(
            names(&out),
            ["content-type", "transfer-encoding", "connection"]
        );
    }
}
