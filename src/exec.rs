//! Exec credential plugins: running the command a kubeconfig user names under `exec`, and
//! reading the `ExecCredential` it prints.
//!
//! This module runs one plugin once per call and parses its answer; it does not decide when
//! to run it again (that is [`crate::kube::TokenClient`]'s cache) and it does not read
//! kubeconfig files ([`crate::kubeconfig`] builds the [`ExecConfig`]). The plugin's stdout
//! carries a credential, so it never appears in an error or a log; the first line of its
//! stderr may, as plugins write their diagnostics there.
//!
//! See <https://kubernetes.io/docs/reference/access-authn-authz/authentication/#client-go-credential-plugins>.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::timefmt::parse_rfc3339;
use crate::token::Token;

/// `apiVersion` of the stable ExecCredential.
pub const EXEC_API_V1: &str = "client.authentication.k8s.io/v1";
/// `apiVersion` of the beta ExecCredential, still written by many plugins' set-up commands.
pub const EXEC_API_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";
/// Environment variable through which a plugin receives the ExecCredential request.
pub const EXEC_INFO_ENV: &str = "KUBERNETES_EXEC_INFO";
/// A plugin still running after this long is killed and the call fails.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Plugin output larger than this (bytes) is refused; an ExecCredential is a few KiB.
const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// At most this many characters of the plugin's stderr line are kept in an error.
const MAX_STDERR_CHARS: usize = 200;

/// A kubeconfig user's `exec` entry, with relative paths already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    /// Where this entry came from, e.g. `kubeconfig /home/me/.kube/config, user "dev"`; it
    /// starts every error message about the plugin.
    pub origin: String,
    /// [`EXEC_API_V1`] or [`EXEC_API_V1BETA1`].
    pub api_version: String,
    /// The program; a bare name is looked up in `PATH`.
    pub command: PathBuf,
    /// Arguments after the command.
    pub args: Vec<String>,
    /// Added to (or replacing in) the proxy's own environment.
    pub env: Vec<(String, String)>,
    /// When set, `spec.cluster` of the request describes the API server.
    pub cluster: Option<ExecCluster>,
    /// How long the plugin may run.
    pub timeout: Duration,
}

/// `spec.cluster` of the request, sent when the kubeconfig asks for `provideClusterInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecCluster {
    /// The cluster's `server`.
    pub server: String,
    /// The cluster's `tls-server-name`, if any.
    #[serde(rename = "tls-server-name", skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The cluster's `insecure-skip-tls-verify`.
    #[serde(rename = "insecure-skip-tls-verify")]
    pub insecure_skip_tls_verify: bool,
    /// The cluster's CA bundle, base64 of the PEM as in a kubeconfig.
    #[serde(
        rename = "certificate-authority-data",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority_data: Option<String>,
}

/// What a plugin returned.
#[derive(Clone)]
pub struct ExecCredential {
    /// Bearer token, when the plugin gave one.
    pub token: Option<Token>,
    /// `(certificate chain PEM, private key PEM)`, when the plugin gave a client certificate.
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Until when the credential may be used; `None` means until the API server refuses it.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for ExecCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecCredential")
            .field("token", &self.token)
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a plugin gave no usable credential. Never holds the plugin's stdout.
#[derive(Debug, Clone)]
pub enum ExecError {
    /// The command could not be started (not found, not executable).
    Spawn {
        origin: String,
        command: PathBuf,
        source: Arc<io::Error>,
    },
    /// Reading the plugin's output or waiting for it failed.
    Wait {
        origin: String,
        command: PathBuf,
        source: Arc<io::Error>,
    },
    /// The plugin did not finish within its timeout and was killed.
    Timeout {
        origin: String,
        command: PathBuf,
        timeout: Duration,
    },
    /// The plugin exited with a failure; `stderr` is the first non-empty line it wrote there.
    Failed {
        origin: String,
        command: PathBuf,
        status: String,
        stderr: Option<String>,
    },
    /// The plugin's output is not a usable ExecCredential (`what` says which part).
    ParseOutput {
        origin: String,
        command: PathBuf,
        what: &'static str,
    },
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Spawn {
                origin, command, ..
            } => write!(
                f,
                "{origin}: cannot start exec plugin {}",
                command.display()
            ),
            ExecError::Wait {
                origin, command, ..
            } => write!(
                f,
                "{origin}: lost track of exec plugin {}",
                command.display()
            ),
            ExecError::Timeout {
                origin,
                command,
                timeout,
            } => write!(
                f,
                "{origin}: exec plugin {} did not finish within {}s and was killed",
                command.display(),
                timeout.as_secs()
            ),
            ExecError::Failed {
                origin,
                command,
                status,
                stderr,
            } => {
                write!(f, "{origin}: exec plugin {} {status}", command.display())?;
                match stderr {
                    Some(line) => write!(f, ": {line}"),
                    None => Ok(()),
                }
            }
            ExecError::ParseOutput {
                origin,
                command,
                what,
            } => write!(
                f,
                "{origin}: output of exec plugin {} {what}",
                command.display()
            ),
        }
    }
}

impl std::error::Error for ExecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExecError::Spawn { source, .. } | ExecError::Wait { source, .. } => {
                Some(source.as_ref())
            }
            _ => None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecRequest<'a> {
    api_version: &'a str,
    kind: &'static str,
    spec: ExecRequestSpec<'a>,
}

#[derive(Serialize)]
struct ExecRequestSpec<'a> {
    interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a ExecCluster>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecResponse {
    api_version: Option<String>,
    kind: Option<String>,
    status: Option<ExecResponseStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecResponseStatus {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    expiration_timestamp: Option<String>,
}

impl ExecConfig {
    /// The JSON put into [`EXEC_INFO_ENV`]: a non-interactive request, with the cluster when
    /// the kubeconfig asked for it.
    pub fn exec_info(&self) -> String {
        let request = ExecRequest {
            api_version: &self.api_version,
            kind: "ExecCredential",
            spec: ExecRequestSpec {
                interactive: false,
                cluster: self.cluster.as_ref(),
            },
        };
        serde_json::to_string(&request).expect("a struct of strings always serializes")
    }

    /// Runs the plugin once, with stdin closed, the configured environment merged into ours
    /// and [`EXEC_INFO_ENV`] set, and parses what it prints.
    ///
    /// Fails when it cannot start, runs past its timeout (it is then killed), exits with a
    /// failure, or prints something that is not an ExecCredential of the configured version
    /// with a token or a client certificate; see [`ExecError`].
    pub fn run(&self) -> Result<ExecCredential, ExecError> {
        let mut child = Command::new(&self.command)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(EXEC_INFO_ENV, self.exec_info())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ExecError::Spawn {
                origin: self.origin.clone(),
                command: self.command.clone(),
                source: Arc::new(e),
            })?;
        let wait_error = |e| ExecError::Wait {
            origin: self.origin.clone(),
            command: self.command.clone(),
            source: Arc::new(e),
        };

        // Both pipes are drained on their own threads so that a chatty plugin cannot block on
        // a full pipe while we wait for it to exit.
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ExecError::Timeout {
                        origin: self.origin.clone(),
                        command: self.command.clone(),
                        timeout: self.timeout,
                    });
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    let _ = child.kill();
                    return Err(wait_error(e));
                }
            }
        };
        let stdout = join(stdout).map_err(wait_error)?;
        let stderr = join(stderr).unwrap_or_default();

        if !status.success() {
            let status = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_string(),
            };
            return Err(ExecError::Failed {
                origin: self.origin.clone(),
                command: self.command.clone(),
                status,
                stderr: first_line(&stderr),
            });
        }
        self.parse_output(&stdout)
    }

    /// Parses a plugin's stdout. serde's messages can quote the input, so they are dropped.
    fn parse_output(&self, stdout: &[u8]) -> Result<ExecCredential, ExecError> {
        let malformed = |what| ExecError::ParseOutput {
            origin: self.origin.clone(),
            command: self.command.clone(),
            what,
        };
        let response: ExecResponse =
            serde_json::from_slice(stdout).map_err(|_| malformed("is not an ExecCredential"))?;
        if response.kind.as_deref() != Some("ExecCredential") {
            return Err(malformed("is not an ExecCredential (kind)"));
        }
        if response.api_version.as_deref() != Some(self.api_version.as_str()) {
            return Err(malformed(
                "has another apiVersion than the kubeconfig's exec entry",
            ));
        }
        let status = response.status.ok_or_else(|| malformed("has no status"))?;
        let token = status.token.filter(|t| !t.is_empty()).map(Token::new);
        let cert = status.client_certificate_data.filter(|c| !c.is_empty());
        let key = status.client_key_data.filter(|k| !k.is_empty());
        let client_cert_pem = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert.into_bytes(), key.into_bytes())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(malformed(
                    "has status.clientCertificateData without clientKeyData",
                ))
            }
            (None, Some(_)) => {
                return Err(malformed(
                    "has status.clientKeyData without clientCertificateData",
                ))
            }
        };
        if token.is_none() && client_cert_pem.is_none() {
            return Err(malformed(
                "has neither status.token nor status.clientCertificateData",
            ));
        }
        let expires_at = match status.expiration_timestamp.filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => Some(
                parse_rfc3339(&text)
                    .ok_or_else(|| malformed("has an invalid status.expirationTimestamp"))?,
            ),
        };
        Ok(ExecCredential {
            token,
            client_cert_pem,
            expires_at,
        })
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        pipe.by_ref().take(MAX_OUTPUT_BYTES).read_to_end(&mut out)?;
        // Whatever is past the limit is read and dropped, so the plugin can finish.
        io::copy(&mut pipe, &mut io::sink())?;
        Ok(out)
    })
}

fn join(handle: Option<thread::JoinHandle<io::Result<Vec<u8>>>>) -> io::Result<Vec<u8>> {
    match handle {
        None => Ok(Vec::new()),
        Some(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("output reader panicked"))),
    }
}

/// The first non-empty line of `stderr`, trimmed and bounded, for an error message.
fn first_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line: String = line.chars().filter(|c| !c.is_control()).collect();
    Some(match line.char_indices().nth(MAX_STDERR_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const FAKE: &str = "fake-exec-token-for-tests";

    fn config(api_version: &str) -> ExecConfig {
        ExecConfig {
            origin: "kubeconfig /k, user \"dev\"".into(),
            api_version: api_version.into(),
            command: PathBuf::from("/bin/sh"),
            args: Vec::new(),
            env: Vec::new(),
            cluster: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn exec_info_is_a_non_interactive_request() {
        let info: serde_json::Value =
            serde_json::from_str(&config(EXEC_API_V1).exec_info()).unwrap();
        assert_eq!(
            info,
            serde_json::json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "spec": {"interactive": false}
            })
        );
        let mut with_cluster = config(EXEC_API_V1BETA1);
        with_cluster.cluster = Some(ExecCluster {
            server: "https://h:6443".into(),
            tls_server_name: None,
            insecure_skip_tls_verify: false,
            certificate_authority_data: Some("Q0E=".into()),
        });
        let info: serde_json::Value = serde_json::from_str(&with_cluster.exec_info()).unwrap();
        assert_eq!(info["apiVersion"], EXEC_API_V1BETA1);
        assert_eq!(
            info["spec"]["cluster"],
            serde_json::json!({
                "server": "https://h:6443",
                "insecure-skip-tls-verify": false,
                "certificate-authority-data": "Q0E="
            })
        );
    }

    #[test]
    fn parses_tokens_certificates_and_expiry() {
        let c = config(EXEC_API_V1);
        let out = format!(
            r#"{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential","status":{{"token":"{FAKE}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#
        );
        let cred = c.parse_output(out.as_bytes()).unwrap();
        assert_eq!(cred.token.unwrap().expose(), FAKE);
        assert_eq!(
            cred.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );

        let out = format!(
            r#"{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential","status":{{"clientCertificateData":"CERT","clientKeyData":"KEY"}}}}"#
        );
        let cred = c.parse_output(out.as_bytes()).unwrap();
        assert!(cred.token.is_none() && cred.expires_at.is_none());
        assert_eq!(
            cred.client_cert_pem,
            Some((b"CERT".to_vec(), b"KEY".to_vec()))
        );
        assert!(!format!("{cred:?}").contains("KEY"));
    }

    #[test]
    fn bad_output_is_refused_without_echoing_it() {
        let c = config(EXEC_API_V1);
        for (out, what) in [
            (format!("not json {FAKE}"), "is not an ExecCredential"),
            (
                format!(
                    r#"{{"apiVersion":"{EXEC_API_V1}","kind":"Other","status":{{"token":"{FAKE}"}}}}"#
                ),
                "is not an ExecCredential (kind)",
            ),
            (
                format!(
                    r#"{{"apiVersion":"{EXEC_API_V1BETA1}","kind":"ExecCredential","status":{{"token":"{FAKE}"}}}}"#
                ),
                "has another apiVersion than the kubeconfig's exec entry",
            ),
            (
                format!(r#"{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential"}}"#),
                "has no status",
            ),
            (
                format!(
                    r#"{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential","status":{{}}}}"#
                ),
                "has neither status.token nor status.clientCertificateData",
            ),
            (
                format!(
                    r#"{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential","status":{{"clientCertificateData":"{FAKE}"}}}}"#
                ),
                "has status.clientCertificateData without clientKeyData",
            ),
            (
                format!(
                    r#"{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential","status":{{"token":"{FAKE}","expirationTimestamp":"{FAKE}"}}}}"#
                ),
                "has an invalid status.expirationTimestamp",
            ),
        ] {
            let err = c.parse_output(out.as_bytes()).unwrap_err();
            let (display, debug) = (err.to_string(), format!("{err:?}"));
            assert_eq!(
                display,
                format!("kubeconfig /k, user \"dev\": output of exec plugin /bin/sh {what}")
            );
            assert!(!debug.contains(FAKE), "{debug}");
        }
    }

    #[test]
    fn runs_a_plugin_and_reports_its_failures() {
        let mut c = config(EXEC_API_V1);
        c.args = vec![
            "-c".into(),
            format!(
                r#"test "$KUBERNETES_EXEC_INFO" = '{}' || exit 3; echo '{{"apiVersion":"{EXEC_API_V1}","kind":"ExecCredential","status":{{"token":"'"$TOKEN"'"}}}}'"#,
                c.exec_info()
            ),
        ];
        c.env = vec![("TOKEN".into(), FAKE.into())];
        assert_eq!(c.run().unwrap().token.unwrap().expose(), FAKE);

        c.args = vec![
            "-c".into(),
            format!(
                "echo {FAKE}; echo; echo '  no credentials for you  ' >&2; echo more >&2; exit 1"
            ),
        ];
        let err = c.run().unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubeconfig /k, user \"dev\": exec plugin /bin/sh exited with status 1: no \
             credentials for you"
        );

        c.args = vec!["-c".into(), "sleep 5".into()];
        c.timeout = Duration::from_millis(100);
        let err = c.run().unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");

        c.command = PathBuf::from("/nonexistent/plugin");
        let err = c.run().unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubeconfig /k, user \"dev\": cannot start exec plugin /nonexistent/plugin"
        );
    }

    #[test]
    fn stderr_lines_are_bounded() {
        assert_eq!(
            first_line(b"\n\n  a\tb \nc"),
            Some("a\tb".replace('\t', ""))
        );
        assert_eq!(first_line(b" \n"), None);
        let long = "x".repeat(500);
        assert_eq!(
            first_line(long.as_bytes()).unwrap().chars().count(),
            MAX_STDERR_CHARS + 1
        );
    }
}
