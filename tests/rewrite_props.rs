//! Property tests for the pure rewriting in `proxy::rewrite`: for any query string only the
//! audience parameter is taken out and every other byte stays as sent, and header rewriting
//! drops exactly the hop-by-hop fields, keeps the rest in order, and sets one token.

use kube_audience_proxy::http1::{BodyKind, Header};
use kube_audience_proxy::proxy::rewrite::{
    client_response_headers, extract_audience, upstream_request_headers,
};
use kube_audience_proxy::token::Token;
use proptest::prelude::*;

const PARAM: &str = "kubernetes-audience";

/// Characters a client may put in a query pair: unreserved, sub-delims (but `&`), `%`
/// escapes (valid or not), `+`, `=`, `:`, `@`, `/` and `?`.
fn pair() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~!$'()*,;=:@/?+%-]{0,12}"
}

fn path() -> impl Strategy<Value = String> {
    "(/[A-Za-z0-9._~%:@!$'()*+,;=-]{0,8}){0,3}"
}

/// Percent-encodes every byte outside the unreserved set, as a careful client would.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `pair` names the audience parameter once form-decoded (then it is not "other").
fn names_param(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
    extract_audience(&format!("/?{name}=x"), PARAM)
        .map(|e| e.audience.is_some())
        .unwrap_or(true)
}

proptest! {
    #[test]
    fn only_the_audience_pair_is_removed(
        path in path(),
        others in prop::collection::vec(pair(), 0..6),
        position in 0usize..6,
        audience in "[^\\p{Cc}]{1,40}",
        fragment in prop::option::of("#[A-Za-z0-9?&=/]{0,8}"),
    ) {
        prop_assume!(!others.iter().any(|p| names_param(p)));
        let at = position.min(others.len());
        let mut pairs = others.clone();
        pairs.insert(at, format!("{PARAM}={}", encode(&audience)));
        let fragment = fragment.unwrap_or_default();
        let target = format!("{path}?{}{fragment}", pairs.join("&"));

        let extracted = extract_audience(&target, PARAM).unwrap();

        prop_assert_eq!(extracted.audience.as_deref(), Some(audience.as_str()));
        let rest = others.join("&");
        let path = if path.is_empty() { "/" } else { path.as_str() };
        let expected = if rest.is_empty() {
            format!("{path}{fragment}")
        } else {
            format!("{path}?{rest}{fragment}")
        };
        prop_assert_eq!(extracted.target, expected);
    }

    #[test]
    fn a_target_without_the_parameter_is_byte_identical(
        path in "/[A-Za-z0-9._~%:@!$'()*+,;=/-]{0,20}",
        query in prop::option::of("[A-Za-z0-9._~!$'()*,;=:@/?+%&-]{0,40}"),
    ) {
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let has_param = query
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .any(names_param);
        prop_assume!(!has_param);

        let extracted = extract_audience(&target, PARAM).unwrap();

        prop_assert_eq!(extracted.audience, None);
        prop_assert_eq!(extracted.target, target);
    }

    #[test]
    fn a_repeated_audience_is_refused(
        path in path(),
        others in prop::collection::vec(pair(), 0..4),
        a in "[a-z]{1,8}",
        b in "[a-z]{1,8}",
    ) {
        prop_assume!(!others.iter().any(|p| names_param(p)));
        let mut pairs = others;
        pairs.push(format!("{PARAM}={a}"));
        pairs.insert(0, format!("{PARAM}={b}"));
        let target = format!("{path}?{}", pairs.join("&"));
        prop_assert!(extract_audience(&target, PARAM).is_err());
    }
}

/// Field names that must never be forwarded in either direction.
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

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authorization",
            "TE",
            "Trailer",
            "Upgrade",
            "Transfer-Encoding",
            "Content-Length",
            "Authorization",
            "Host",
            "Expect",
            "Accept",
            "X-Private",
            "x-private",
            "User-Agent",
        ])
        .prop_map(str::to_string),
        "X-[A-Za-z0-9-]{1,10}",
    ]
}

fn field() -> impl Strategy<Value = Header> {
    (
        field_name(),
        prop_oneof![
            prop::collection::vec(prop_oneof![Just(b','), 0x20u8..0x7f, 0x80u8..=0xff], 0..24),
            // A list of field names, as `Connection` carries.
            prop::collection::vec(field_name(), 0..4)
                .prop_map(|names| names.join(", ").into_bytes()),
        ],
    )
        .prop_map(|(name, value)| Header::new(name, value))
}

fn body_kind() -> impl Strategy<Value = BodyKind> {
    prop_oneof![
        Just(BodyKind::None),
        Just(BodyKind::Chunked),
        (0u64..1 << 40).prop_map(BodyKind::Length),
    ]
}

/// Names listed in `Connection` fields, lowercase.
fn connection_named(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(&h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn dropped(field: &Header, named: &[String]) -> bool {
    let name = field.name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&name.as_str()) || named.contains(&name)
}

fn framing(body: BodyKind) -> Option<(String, Vec<u8>)> {
    match body {
        BodyKind::Length(n) => Some(("content-length".into(), n.to_string().into_bytes())),
        BodyKind::Chunked => Some(("transfer-encoding".into(), b"chunked".to_vec())),
        BodyKind::None | BodyKind::UntilClose => None,
    }
}

fn lower(headers: &[Header]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect()
}

proptest! {
    #[test]
    fn request_headers_keep_end_to_end_fields_in_order_and_carry_one_token(
        input in prop::collection::vec(field(), 0..16),
        with_token in any::<bool>(),
        body in body_kind(),
    ) {
        let token = Token::new("fake-token.prop.1");
        let token = with_token.then_some(&token);
        let out = upstream_request_headers(&input, token, "target:9090", body);

        let named = connection_named(&input);
        let mut expected: Vec<(String, Vec<u8>)> = input
            .iter()
            .filter(|h| !dropped(h, &named) && !h.name.eq_ignore_ascii_case("expect"))
            .filter(|h| token.is_none() || !h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect();
        if !expected.iter().any(|(n, _)| n == "host") {
            expected.insert(0, ("host".into(), b"target:9090".to_vec()));
        }
        if token.is_some() {
            expected.push(("authorization".into(), b"Bearer fake-token.prop.1".to_vec()));
        }
        expected.extend(framing(body));
        prop_assert_eq!(lower(&out), expected);
    }

    #[test]
    fn response_headers_drop_hop_by_hop_fields_and_frame_the_body(
        input in prop::collection::vec(field(), 0..16),
        body in body_kind(),
        close in any::<bool>(),
    ) {
        let out = client_response_headers(&input, body, close);

        let named = connection_named(&input);
        let mut expected: Vec<(String, Vec<u8>)> = input
            .iter()
            .filter(|h| {
                let keep_length =
                    body == BodyKind::None && h.name.eq_ignore_ascii_case("content-length");
                keep_length || !dropped(h, &named)
            })
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect();
        expected.extend(framing(body));
        if close {
            expected.push(("connection".into(), b"close".to_vec()));
        }
        prop_assert_eq!(lower(&out), expected);
    }
}
