//! Raw command-line flags: the argh struct, plus the rewriting of `argv` that lets the flag
//! forms of the earlier Go tool through argh.
//!
//! This module only turns words into typed fields. It applies no defaults that depend on the
//! environment and reads no files; [`crate::config`] does both and checks every value.
//!
//! The Go tool parsed flags with pflag, so existing manifests write `--name=value`, may pass
//! `--switch=false`, and may carry klog's logging flags (`--v=2`, `--logtostderr`). argh knows
//! none of these forms, so [`parse_args`] rewrites them first: `--name=value` becomes
//! `--name value`, `--switch=true` becomes `--switch`, `--switch=false` disappears, an option
//! given twice keeps its last value (repeatable options keep all), and klog flags are dropped
//! and reported back so that the caller can warn about them once.

use std::path::PathBuf;

use argh::{EarlyExit, FromArgs};

use crate::logging::{LogFormat, LogLevel};

/// Name shown in `--help` and in usage errors, whatever path the binary was started from.
pub const COMMAND_NAME: &str = "kube-audience-proxy";

/// Switches of this tool: flags that take no value, but accept `=true` / `=false`.
const SWITCHES: &[&str] = &["--insecure-skip-tls-verify"];

/// Options of this tool that hold one value. Given more than once, the last one wins, as with
/// pflag, so that a manifest can append an override. Must match [`Args`] (a test checks).
const SINGLE_VALUE_OPTIONS: &[&str] = &[
    "--insecure-listen-address",
    "--secure-listen-address",
    "--tls-cert-file",
    "--tls-private-key-file",
    "--tls-min-version",
    "--service-account",
    "--namespace-file",
    "--namespace",
    "--apiserver",
    "--apiserver-ca-file",
    "--apiserver-token-file",
    "--kubeconfig",
    "--context",
    "--audience-parameter",
    "--allowed-audiences",
    "--token-expiration-seconds",
    "--ca-file-destination",
    "--log-level",
    "--log-format",
    "--metrics-listen-address",
    "--shutdown-grace-period",
    "--bound-pod-name",
    "--bound-pod-uid",
    "--proxy-credentials-file",
    "--max-connections",
    "--request-head-timeout",
    "--client-idle-timeout",
    "--upstream-connect-timeout",
    "--upstream-response-timeout",
    "--upstream-idle-timeout",
];

/// Options of this tool that may be repeated; every value is kept.
const REPEATED_OPTIONS: &[&str] = &["--tls-cipher-suites", "--upstream-ca-file"];

/// klog flags that take a value (`--v=2` or `--v 2`), accepted and ignored.
const KLOG_VALUE_FLAGS: &[&str] = &[
    "--v",
    "-v",
    "--vmodule",
    "--log_dir",
    "--log_file",
    "--log_file_max_size",
    "--stderrthreshold",
    "--log_backtrace_at",
];

/// klog boolean flags (`--logtostderr`, optionally `=true|false`), accepted and ignored.
const KLOG_SWITCHES: &[&str] = &[
    "--logtostderr",
    "--alsologtostderr",
    "--add_dir_header",
    "--skip_headers",
    "--skip_log_headers",
];

/// HTTP forward proxy that injects audience-scoped Kubernetes ServiceAccount tokens.
///
/// A client names the audience in a query parameter; the proxy requests a token for it from the
/// TokenRequest API and forwards the request with that token as its bearer credential. HTTPS
/// targets are intercepted with a CA generated at start-up. Options also take --name=value.
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// address of the plain-HTTP proxy listener, IP:PORT or :PORT (default 127.0.0.1:8080
    /// when neither listener flag is given)
    #[argh(option, arg_name = "ADDR")]
    pub insecure_listen_address: Option<String>,

    /// address of the TLS proxy listener, IP:PORT or :PORT (none by default)
    #[argh(option, arg_name = "ADDR")]
    pub secure_listen_address: Option<String>,

    /// PEM certificate chain of the TLS listener; with --tls-private-key-file, else a
    /// self-signed certificate is generated at start-up
    #[argh(option, arg_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key matching --tls-cert-file
    #[argh(option, arg_name = "PATH")]
    pub tls_private_key_file: Option<PathBuf>,

    /// lowest TLS version of the TLS listener: VersionTLS12 (default) or VersionTLS13
    #[argh(option, arg_name = "VERSION")]
    pub tls_min_version: Option<String>,

    /// comma-separated cipher suites of the TLS listener, as Go names
    /// (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ...); repeatable; default: rustls's suites
    #[argh(option, arg_name = "LIST")]
    pub tls_cipher_suites: Vec<String>,

    /// name of the ServiceAccount whose tokens are requested (default: $SERVICE_ACCOUNT; required)
    #[argh(option, arg_name = "NAME")]
    pub service_account: Option<String>,

    /// file holding the namespace of that ServiceAccount (default
    /// /var/run/secrets/kubernetes.io/serviceaccount/namespace)
    #[argh(option, arg_name = "PATH")]
    pub namespace_file: Option<PathBuf>,

    /// namespace of the ServiceAccount; overrides --namespace-file
    #[argh(option, arg_name = "NAME")]
    pub namespace: Option<String>,

    /// base URL of the API server, http or https, optionally with a path prefix (default
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)
    #[argh(option, arg_name = "URL")]
    pub apiserver: Option<String>,

    /// PEM bundle the API server's certificate must chain to (default
    /// /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; unused for http://)
    #[argh(option, arg_name = "PATH")]
    pub apiserver_ca_file: Option<PathBuf>,

    /// bearer token file used to call the TokenRequest API, re-read as it rotates (default
    /// /var/run/secrets/kubernetes.io/serviceaccount/token)
    #[argh(option, arg_name = "PATH")]
    pub apiserver_token_file: Option<PathBuf>,

    /// kubeconfig file configuring API access instead of the mounted ServiceAccount files
    /// (default when not in a pod: the first file of $KUBECONFIG, else ~/.kube/config)
    #[argh(option, arg_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// kubeconfig context to use (default: its current-context)
    #[argh(option, arg_name = "NAME")]
    pub context: Option<String>,

    /// query parameter that carries the audience (default kubernetes-audience)
    #[argh(option, arg_name = "NAME")]
    pub audience_parameter: Option<String>,

    /// comma-separated audiences that may be requested, each AUD or AUD=HOST, AUD=HOST:PORT or
    /// AUD=*.SUFFIX to bind it to destinations (default: any audience, any destination)
    #[argh(option, arg_name = "LIST")]
    pub allowed_audiences: Option<String>,

    /// lifetime asked for each token, at least 600 (default 3600)
    #[argh(option, arg_name = "N", default = "3600")]
    pub token_expiration_seconds: u64,

    /// where the generated interception CA certificate is written (default ca.crt)
    #[argh(option, arg_name = "PATH")]
    pub ca_file_destination: Option<PathBuf>,

    /// extra PEM bundle trusted for upstream targets' certificates; repeatable
    #[argh(option, arg_name = "PATH")]
    pub upstream_ca_file: Vec<PathBuf>,

    /// do not verify upstream targets' certificates (insecure: anyone on the path can read the
    /// injected tokens)
    #[argh(switch)]
    pub insecure_skip_tls_verify: bool,

    /// log level of this program: all, debug, info (default), warn, error or none
    #[argh(option, arg_name = "LEVEL", default = "LogLevel::Info")]
    pub log_level: LogLevel,

    /// log format on stderr: logfmt (default) or json
    #[argh(option, arg_name = "FORMAT", default = "LogFormat::Logfmt")]
    pub log_format: LogFormat,

    /// address of a separate listener for /healthz, /readyz and /metrics (none by default)
    #[argh(option, arg_name = "ADDR")]
    pub metrics_listen_address: Option<String>,

    /// on SIGTERM or SIGINT, how long in-flight requests may take to finish (default 10s)
    #[argh(option, arg_name = "DURATION")]
    pub shutdown_grace_period: Option<String>,

    /// name of the pod the tokens are bound to (default $POD_NAME); needs --bound-pod-uid
    #[argh(option, arg_name = "NAME")]
    pub bound_pod_name: Option<String>,

    /// uid of the pod the tokens are bound to (default $POD_UID); needs --bound-pod-name
    #[argh(option, arg_name = "UID")]
    pub bound_pod_uid: Option<String>,

    /// file holding user:password that clients must send as Proxy-Authorization (Basic)
    #[argh(option, arg_name = "PATH")]
    pub proxy_credentials_file: Option<PathBuf>,

    /// most client connections served at once; more wait to be accepted (default 1024)
    #[argh(option, arg_name = "N")]
    pub max_connections: Option<usize>,

    /// time a client has to send a whole request head once it started (default 30s)
    #[argh(option, arg_name = "DURATION")]
    pub request_head_timeout: Option<String>,

    /// idle keep-alive client connections are closed after this (default 90s)
    #[argh(option, arg_name = "DURATION")]
    pub client_idle_timeout: Option<String>,

    /// time to connect to an upstream, TLS handshake included (default 10s)
    #[argh(option, arg_name = "DURATION")]
    pub upstream_connect_timeout: Option<String>,

    /// time from sending a request to the upstream's response head (default 60s)
    #[argh(option, arg_name = "DURATION")]
    pub upstream_response_timeout: Option<String>,

    /// idle pooled upstream connections are closed after this (default 60s)
    #[argh(option, arg_name = "DURATION")]
    pub upstream_idle_timeout: Option<String>,
}

/// The result of a successful [`parse_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedArgs {
    /// The flags, not yet validated.
    pub args: Args,
    /// klog flags of the Go tool that were given and dropped, each once, in order of first
    /// appearance (`--v`, `--logtostderr`), without their values.
    pub ignored_flags: Vec<String>,
}

/// Parses the program's arguments, `argv[0]` excluded.
///
/// Fails with an [`EarlyExit`] whose `status` is `Ok` for `-h`/`--help` (print `output` to
/// stdout, exit 0) and `Err` for a usage error (print `output` to stderr, exit 2): an unknown
/// flag, a missing value, a value of the wrong type, or a switch given `=` with a value other
/// than a boolean.
pub fn parse_args(args: &[String]) -> Result<ParsedArgs, EarlyExit> {
    let normalised = normalise(args)?;
    let words: Vec<&str> = normalised.words.iter().map(String::as_str).collect();
    let args = Args::from_args(&[COMMAND_NAME], &words)?;
    Ok(ParsedArgs {
        args,
        ignored_flags: normalised.ignored_flags,
    })
}

/// `argv` rewritten into the forms argh accepts, plus the klog flags that were dropped.
#[derive(Debug, PartialEq, Eq)]
struct Normalised {
    words: Vec<String>,
    ignored_flags: Vec<String>,
}

/// Rewrites the pflag forms into argh's; see the module doc. Words after `--` are left alone.
fn normalise(args: &[String]) -> Result<Normalised, EarlyExit> {
    let mut out = Normalised {
        words: Vec::with_capacity(args.len()),
        ignored_flags: Vec::new(),
    };
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        if word == "--" {
            out.words.push(word.clone());
            out.words.extend(rest.cloned());
            break;
        }
        let (name, inline_value) = match word.split_once('=') {
            Some((name, value)) if name.starts_with('-') => (name, Some(value)),
            _ => (word.as_str(), None),
        };

        if KLOG_VALUE_FLAGS.contains(&name) {
            if inline_value.is_none() {
                // Like pflag, the next word is the value whatever it looks like.
                rest.next();
            }
            out.ignore(name);
        } else if KLOG_SWITCHES.contains(&name) {
            if let Some(value) = inline_value {
                parse_bool(name, value)?;
            }
            out.ignore(name);
        } else if SWITCHES.contains(&name) {
            match inline_value {
                None => out.words.push(name.to_string()),
                Some(value) => {
                    if parse_bool(name, value)? {
                        out.words.push(name.to_string());
                    }
                }
            }
        } else if let Some(value) = inline_value {
            out.words.push(name.to_string());
            out.words.push(value.to_string());
        } else if takes_value(word) {
            // The next word is this option's value, even if it looks like a flag; argh
            // reads it the same way.
            out.words.push(word.clone());
            out.words.extend(rest.next().cloned());
        } else {
            out.words.push(word.clone());
        }
    }
    out.words = keep_last_values(out.words);
    Ok(out)
}

/// Drops every earlier occurrence of a [`SINGLE_VALUE_OPTIONS`] option together with its
/// value. Unknown words are kept for argh to refuse.
fn keep_last_values(words: Vec<String>) -> Vec<String> {
    // Pair each option with its value the way argh will: the next word, whatever it is.
    let mut items: Vec<(Option<&str>, &[String])> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_str();
        if word == "--" {
            items.push((None, &words[i..]));
            break;
        }
        let len = if takes_value(word) {
            2.min(words.len() - i)
        } else {
            1
        };
        let single = SINGLE_VALUE_OPTIONS.contains(&word).then_some(word);
        items.push((single, &words[i..i + len]));
        i += len;
    }

    let mut kept = Vec::with_capacity(words.len());
    for (n, (name, part)) in items.iter().enumerate() {
        let overridden = name.is_some() && items[n + 1..].iter().any(|(later, _)| later == name);
        if !overridden {
            kept.extend(part.iter().cloned());
        }
    }
    kept
}

impl Normalised {
    fn ignore(&mut self, name: &str) {
        let name = if name == "-v" { "--v" } else { name };
        if !self.ignored_flags.iter().any(|n| n == name) {
            self.ignored_flags.push(name.to_string());
        }
    }
}

/// Whether `word` is one of our options that take a value.
fn takes_value(word: &str) -> bool {
    SINGLE_VALUE_OPTIONS.contains(&word) || REPEATED_OPTIONS.contains(&word)
}

/// The boolean spellings pflag accepts (Go's `strconv.ParseBool`).
fn parse_bool(flag: &str, value: &str) -> Result<bool, EarlyExit> {
    match value {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err(EarlyExit {
            output: format!(
                "Invalid value for switch '{flag}': {value:?}; \
                 it takes no value, or =true / =false\n"
            ),
            status: Err(()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    fn normalised(list: &[&str]) -> Normalised {
        normalise(&words(list)).expect("normalise failed")
    }

    fn parse(list: &[&str]) -> Result<ParsedArgs, EarlyExit> {
        parse_args(&words(list))
    }

    #[test]
    fn equals_form_is_split_at_the_first_equals_sign_only() {
        let n = normalised(&[
            "--namespace=ns",
            "--allowed-audiences=a=host,b=*.svc",
            "--x=",
        ]);
        assert_eq!(
            n.words,
            words(&[
                "--namespace",
                "ns",
                "--allowed-audiences",
                "a=host,b=*.svc",
                "--x",
                ""
            ])
        );
        assert!(n.ignored_flags.is_empty());
    }

    #[test]
    fn separate_values_and_values_with_equals_signs_are_kept() {
        let n = normalised(&["--namespace", "ns", "--allowed-audiences", "a=b"]);
        assert_eq!(
            n.words,
            words(&["--namespace", "ns", "--allowed-audiences", "a=b"])
        );
    }

    #[test]
    fn separate_values_are_never_rewritten() {
        let n = normalised(&["--allowed-audiences", "-a=b", "--namespace", "--v=2"]);
        assert_eq!(
            n.words,
            words(&["--allowed-audiences", "-a=b", "--namespace", "--v=2"])
        );
        assert!(n.ignored_flags.is_empty());
        let p = parse(&["--namespace", "--logtostderr"]).unwrap();
        assert_eq!(p.args.namespace.as_deref(), Some("--logtostderr"));
    }

    #[test]
    fn words_after_double_dash_are_left_alone() {
        let n = normalised(&["--", "--v=2", "--a=b"]);
        assert_eq!(n.words, words(&["--", "--v=2", "--a=b"]));
        assert!(n.ignored_flags.is_empty());
    }

    #[test]
    fn last_value_of_a_single_value_option_wins() {
        let n = normalised(&[
            "--namespace=a",
            "--upstream-ca-file=u1",
            "--namespace",
            "b",
            "--upstream-ca-file",
            "u2",
            "--apiserver",
            "--namespace",
        ]);
        assert_eq!(
            n.words,
            words(&[
                "--upstream-ca-file",
                "u1",
                "--namespace",
                "b",
                "--upstream-ca-file",
                "u2",
                "--apiserver",
                "--namespace",
            ])
        );
        let p = parse(&["--log-level=debug", "--log-level=warn"]).unwrap();
        assert_eq!(p.args.log_level, LogLevel::Warn);
        // An option without a value at the end is left for argh to refuse.
        assert_eq!(normalised(&["--namespace"]).words, words(&["--namespace"]));
        assert!(parse(&["--namespace=a", "--namespace"]).is_err());
    }

    #[test]
    fn option_lists_match_the_struct() {
        let help = parse(&["--help"]).unwrap_err().output;
        // The usage line lists every flag once, as `[--name <VALUE>]` or `[--switch]`.
        let usage = help.lines().next().unwrap();
        let listed: Vec<&str> = usage
            .split_whitespace()
            .filter_map(|word| word.strip_prefix('['))
            .map(|word| word.trim_end_matches(']'))
            .collect();
        let mut known: Vec<&str> = [SINGLE_VALUE_OPTIONS, REPEATED_OPTIONS, SWITCHES].concat();
        let mut listed_sorted = listed.clone();
        known.sort_unstable();
        listed_sorted.sort_unstable();
        assert_eq!(listed_sorted, known);
    }

    #[test]
    fn switch_forms() {
        let sw = "--insecure-skip-tls-verify";
        assert_eq!(normalised(&[sw]).words, words(&[sw]));
        for yes in ["true", "True", "TRUE", "t", "T", "1"] {
            assert_eq!(
                normalised(&[&format!("{sw}={yes}")]).words,
                words(&[sw]),
                "{yes}"
            );
        }
        for no in ["false", "False", "FALSE", "f", "F", "0"] {
            assert!(
                normalised(&[&format!("{sw}={no}")]).words.is_empty(),
                "{no}"
            );
        }
        for bad in ["maybe", "", "yes", "2"] {
            let err = normalise(&words(&[&format!("{sw}={bad}")])).unwrap_err();
            assert!(err.status.is_err());
            assert!(err.output.contains(sw), "{}", err.output);
        }
    }

    #[test]
    fn switch_forms_reach_the_struct() {
        let on = parse(&["--insecure-skip-tls-verify=true"]).unwrap();
        assert!(on.args.insecure_skip_tls_verify);
        let off = parse(&["--insecure-skip-tls-verify=false"]).unwrap();
        assert!(!off.args.insecure_skip_tls_verify);
        assert!(!parse(&[]).unwrap().args.insecure_skip_tls_verify);
    }

    #[test]
    fn klog_value_flags_are_dropped_with_their_values() {
        let n = normalised(&[
            "--v=2",
            "-v=3",
            "-v",
            "4",
            "--v",
            "5",
            "--vmodule=a=1",
            "--log_dir",
            "/tmp",
            "--log_file=x",
            "--log_file_max_size",
            "10",
            "--stderrthreshold=INFO",
            "--log_backtrace_at",
            "a.go:1",
            "--namespace=ns",
        ]);
        assert_eq!(n.words, words(&["--namespace", "ns"]));
        assert_eq!(
            n.ignored_flags,
            words(&[
                "--v",
                "--vmodule",
                "--log_dir",
                "--log_file",
                "--log_file_max_size",
                "--stderrthreshold",
                "--log_backtrace_at",
            ])
        );
    }

    #[test]
    fn klog_value_flag_takes_the_next_word_whatever_it_is() {
        let n = normalised(&["--v", "--namespace", "ns"]);
        assert_eq!(n.words, words(&["ns"]));
        // A value flag at the very end has nothing to take; it is still just ignored.
        assert_eq!(normalised(&["-v"]).ignored_flags, words(&["--v"]));
    }

    #[test]
    fn klog_switches_are_dropped_in_every_form() {
        let n = normalised(&[
            "--logtostderr",
            "--logtostderr=false",
            "--alsologtostderr=true",
            "--add_dir_header",
            "--skip_headers=1",
            "--skip_log_headers",
            "--namespace",
            "ns",
        ]);
        assert_eq!(n.words, words(&["--namespace", "ns"]));
        assert_eq!(
            n.ignored_flags,
            words(&[
                "--logtostderr",
                "--alsologtostderr",
                "--add_dir_header",
                "--skip_headers",
                "--skip_log_headers",
            ])
        );
        let err = normalise(&words(&["--logtostderr=sometimes"])).unwrap_err();
        assert!(err.output.contains("--logtostderr"), "{}", err.output);
    }

    #[test]
    fn klog_switch_does_not_take_the_next_word() {
        let n = normalised(&["--logtostderr", "--namespace=ns"]);
        assert_eq!(n.words, words(&["--namespace", "ns"]));
    }

    #[test]
    fn every_flag_parses_in_equals_form() {
        let p = parse(&[
            "--insecure-listen-address=127.0.0.1:1",
            "--secure-listen-address=:2",
            "--tls-cert-file=c.pem",
            "--tls-private-key-file=k.pem",
            "--tls-min-version=VersionTLS13",
            "--tls-cipher-suites=A,B",
            "--tls-cipher-suites=C",
            "--service-account=sa",
            "--namespace-file=nsf",
            "--namespace=ns",
            "--apiserver=https://k:6443/p",
            "--apiserver-ca-file=ca",
            "--apiserver-token-file=tok",
            "--audience-parameter=aud",
            "--allowed-audiences=a=h:1",
            "--token-expiration-seconds=700",
            "--ca-file-destination=out.crt",
            "--upstream-ca-file=u1",
            "--upstream-ca-file=u2",
            "--insecure-skip-tls-verify",
            "--log-level=debug",
            "--log-format=json",
            "--v=9",
        ])
        .unwrap();
        let a = &p.args;
        assert_eq!(a.insecure_listen_address.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(a.secure_listen_address.as_deref(), Some(":2"));
        assert_eq!(a.tls_cert_file, Some(PathBuf::from("c.pem")));
        assert_eq!(a.tls_private_key_file, Some(PathBuf::from("k.pem")));
        assert_eq!(a.tls_min_version.as_deref(), Some("VersionTLS13"));
        assert_eq!(a.tls_cipher_suites, words(&["A,B", "C"]));
        assert_eq!(a.service_account.as_deref(), Some("sa"));
        assert_eq!(a.namespace_file, Some(PathBuf::from("nsf")));
        assert_eq!(a.namespace.as_deref(), Some("ns"));
        assert_eq!(a.apiserver.as_deref(), Some("https://k:6443/p"));
        assert_eq!(a.apiserver_ca_file, Some(PathBuf::from("ca")));
        assert_eq!(a.apiserver_token_file, Some(PathBuf::from("tok")));
        assert_eq!(a.audience_parameter.as_deref(), Some("aud"));
        assert_eq!(a.allowed_audiences.as_deref(), Some("a=h:1"));
        assert_eq!(a.token_expiration_seconds, 700);
        assert_eq!(a.ca_file_destination, Some(PathBuf::from("out.crt")));
        assert_eq!(
            a.upstream_ca_file,
            vec![PathBuf::from("u1"), PathBuf::from("u2")]
        );
        assert!(a.insecure_skip_tls_verify);
        assert_eq!(a.log_level, LogLevel::Debug);
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(p.ignored_flags, words(&["--v"]));
    }

    #[test]
    fn defaults_without_flags() {
        let a = parse(&[]).unwrap().args;
        assert_eq!(a.token_expiration_seconds, 3600);
        assert_eq!(a.log_level, LogLevel::Info);
        assert_eq!(a.log_format, LogFormat::Logfmt);
        assert_eq!(a.service_account, None);
        assert!(a.upstream_ca_file.is_empty());
    }

    #[test]
    fn help_triggers_exit_successfully_with_the_flag_list() {
        for trigger in ["-h", "--help"] {
            let exit = parse(&[trigger]).unwrap_err();
            assert_eq!(exit.status, Ok(()));
            assert!(
                exit.output.starts_with("Usage: kube-audience-proxy"),
                "{}",
                exit.output
            );
            for flag in [
                "--service-account",
                "--apiserver",
                "--insecure-skip-tls-verify",
            ] {
                assert!(exit.output.contains(flag), "{flag} missing from help");
            }
        }
        // `help` is a valid value, not a trigger.
        let p = parse(&["--namespace", "help"]).unwrap();
        assert_eq!(p.args.namespace.as_deref(), Some("help"));
    }

    #[test]
    fn usage_errors_fail() {
        for bad in [
            &["--no-such-flag"][..],
            &["--namespace"],
            &["--token-expiration-seconds=soon"],
            &["--log-level=loud"],
            &["--log-format=xml"],
            &["positional"],
        ] {
            let exit = parse(bad).unwrap_err();
            assert_eq!(exit.status, Err(()), "{bad:?}");
        }
        let exit = parse(&["--log-level=loud"]).unwrap_err();
        assert!(exit.output.contains("--log-level"), "{}", exit.output);
        assert!(exit.output.contains("all, debug, info"), "{}", exit.output);
    }
}
