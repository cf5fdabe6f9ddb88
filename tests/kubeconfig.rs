//! API access configured by a kubeconfig, against the fake API server over real TLS: inline
//! CA data with a token, files on disk with client certificates, exec plugins with and
//! without expiry, context selection, and the errors a broken kubeconfig gives.

mod common;

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::apiserver::{audience_of, FakeApiServer};
use common::tempdir::TempDir;
use kube_audience_proxy::base64::encode as encode_base64;
use kube_audience_proxy::cli::parse_args;
use kube_audience_proxy::config::{ApiCredential, Config};
use kube_audience_proxy::kube::{KubeError, TokenClient};
use kube_audience_proxy::token::{IssuedToken, TokenSource};

const KUBECONFIG_TOKEN: &str = "fake-kubeconfig-token-1";

/// `Config::from_args` with these flags and `SERVICE_ACCOUNT=prometheus` plus `env`.
fn config(flags: &[String], env: &[(&str, &str)]) -> Result<Config, String> {
    let args = parse_args(flags).expect("flags parse").args;
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert("SERVICE_ACCOUNT".into(), "prometheus".into());
    Config::from_args(args, &|name| vars.get(name).cloned()).map_err(|e| chain(&e))
}

fn kubeconfig_flag(path: &Path) -> String {
    format!("--kubeconfig={}", path.display())
}

fn client(config: &Config) -> Arc<TokenClient> {
    let client = TokenClient::new(
        &config.api,
        3600,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .expect("client");
    Arc::new(client)
}

fn request(client: &Arc<TokenClient>, audience: &str) -> Result<IssuedToken, KubeError> {
    let (client, audience) = (client.clone(), audience.to_string());
    common::block_on(common::blocking(move || client.request_token(&audience)))
}

/// The error's whole chain, as main prints it.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A one-context kubeconfig for `server`: `cluster` and `user` are the entries' YAML bodies
/// (indented by the caller to sit under `cluster:` / `user:`).
fn one_context(server: &str, cluster: &str, user: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: fake
  cluster:
    server: {server}
{cluster}
contexts:
- name: dev
  context:
    cluster: fake
    user: dev-user
    namespace: {namespace}
users:
- name: dev-user
  user:
{user}
"
    )
}

#[test]
fn inline_ca_data_with_a_token() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let path = dir.join("config");
    let ca_data = encode_base64(server.ca_pem().as_bytes());
    std::fs::write(
        &path,
        one_context(
            &server.url(),
            &format!("    certificate-authority-data: {ca_data}"),
            &format!("    token: {KUBECONFIG_TOKEN}"),
            "monitoring",
        ),
    )
    .unwrap();

    let config = config(&[kubeconfig_flag(&path)], &[]).expect("config");
    assert_eq!(config.api.server, server.url());
    assert_eq!(
        config.api.namespace, "monitoring",
        "the context's namespace"
    );
    assert_eq!(config.api.service_account, "prometheus");
    let debug = format!("{:?}", config.api);
    assert!(!debug.contains(KUBECONFIG_TOKEN), "{debug}");

    let client = client(&config);
    // The server does not know the kubeconfig's token yet.
    let err = request(&client, "vault").unwrap_err();
    assert!(
        matches!(
            err,
            KubeError::Status {
                http_status: 401,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!chain(&err).contains(KUBECONFIG_TOKEN));

    server.accept_bearer(KUBECONFIG_TOKEN);
    let issued = request(&client, "vault").expect("token");
    assert_eq!(audience_of(issued.token.expose()), Some("vault"));
}

#[test]
fn client_certificate_files_relative_to_the_kubeconfig() {
    common::init_logging();
    let server = FakeApiServer::builder().client_certs().start();
    let dir = TempDir::new();
    std::fs::create_dir(dir.join("pki")).unwrap();
    let (cert, key) = server.issue_client_cert("dev-user");
    std::fs::write(dir.join("pki/ca.crt"), server.ca_pem()).unwrap();
    std::fs::write(dir.join("pki/client.crt"), cert).unwrap();
    std::fs::write(dir.join("pki/client.key"), key).unwrap();
    let path = dir.join("config");
    std::fs::write(
        &path,
        one_context(
            &server.url(),
            "    certificate-authority: pki/ca.crt",
            "    client-certificate: pki/client.crt\n    client-key: pki/client.key",
            "monitoring",
        ),
    )
    .unwrap();

    let config = config(&[kubeconfig_flag(&path)], &[]).expect("config");
    assert!(matches!(config.api.credential, ApiCredential::None));
    assert_eq!(config.api.ca_file(), Some(dir.join("pki/ca.crt").as_path()));
    let issued = request(&client(&config), "vault").expect("token");
    assert_eq!(audience_of(issued.token.expose()), Some("vault"));
    assert_eq!(server.client_cert_calls(), 1);

    // A certificate from another CA is refused in the handshake.
    let other = FakeApiServer::builder().client_certs().start();
    let (cert, key) = other.issue_client_cert("dev-user");
    std::fs::write(dir.join("pki/client.crt"), cert).unwrap();
    std::fs::write(dir.join("pki/client.key"), key).unwrap();
    let config = self::config(&[kubeconfig_flag(&path)], &[]).expect("config");
    let err = request(&client(&config), "vault").unwrap_err();
    assert!(
        matches!(err, KubeError::Tls { .. } | KubeError::Transport { .. }),
        "{err:?}"
    );
    assert_eq!(server.client_cert_calls(), 1);
}

/// An exec plugin: a shell script that counts its runs, keeps its `KUBERNETES_EXEC_INFO`
/// and prints `credential.json` from its directory (or fails, when `fail` exists there).
struct Plugin {
    dir: TempDir,
}

impl Plugin {
    fn new() -> Plugin {
        let dir = TempDir::new();
        let script = dir.join("plugin.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             echo run >> \"$PLUGIN_DIR/runs\"\n\
             printf '%s' \"$KUBERNETES_EXEC_INFO\" > \"$PLUGIN_DIR/exec-info\"\n\
             if [ -e \"$PLUGIN_DIR/fail\" ]; then\n\
             \x20 echo 'error: you are not logged in; run the login command' >&2\n\
             \x20 echo 'second line' >&2\n\
             \x20 exit 1\n\
             fi\n\
             cat \"$PLUGIN_DIR/credential.json\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Plugin { dir }
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.join("runs"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn answer(&self, api_version: &str, status: serde_json::Value) {
        let credential = serde_json::json!({
            "apiVersion": api_version,
            "kind": "ExecCredential",
            "status": status,
        });
        std::fs::write(self.dir.join("credential.json"), credential.to_string()).unwrap();
    }

    /// A kubeconfig next to the script, whose user runs it as `./plugin.sh`.
    fn kubeconfig(&self, server: &FakeApiServer, api_version: &str) -> std::path::PathBuf {
        let path = self.dir.join("config");
        let user = format!(
            "    exec:
      apiVersion: {api_version}
      command: ./plugin.sh
      args: [\"--quiet\"]
      env:
      - name: PLUGIN_DIR
        value: {}
      interactiveMode: Never",
            self.dir.path().display()
        );
        std::fs::write(
            &path,
            one_context(
                &server.url(),
                &format!("    certificate-authority: {}", server.ca_file().display()),
                &user,
                "monitoring",
            ),
        )
        .unwrap();
        path
    }
}

#[test]
fn exec_plugin_without_expiry_is_rerun_after_a_401() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let plugin = Plugin::new();
    let v1 = "client.authentication.k8s.io/v1";
    plugin.answer(v1, serde_json::json!({"token": "fake-exec-token-1"}));
    server.accept_bearer("fake-exec-token-1");
    let config = config(&[kubeconfig_flag(&plugin.kubeconfig(&server, v1))], &[]).unwrap();
    let client = client(&config);
    assert_eq!(
        plugin.runs(),
        0,
        "the plugin runs on first use, not at start-up"
    );

    request(&client, "a").expect("first token");
    request(&client, "b").expect("second token");
    assert_eq!(plugin.runs(), 1, "a credential without expiry is reused");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plugin.dir.join("exec-info")).unwrap())
            .unwrap();
    assert_eq!(
        info,
        serde_json::json!({"apiVersion": v1, "kind": "ExecCredential", "spec": {"interactive": false}})
    );

    // The credential is revoked and the plugin now hands out another one.
    server.revoke_bearer("fake-exec-token-1");
    server.accept_bearer("fake-exec-token-2");
    plugin.answer(v1, serde_json::json!({"token": "fake-exec-token-2"}));
    request(&client, "c").expect("token after the 401");
    assert_eq!(plugin.runs(), 2);
    request(&client, "d").expect("token with the new credential");
    assert_eq!(plugin.runs(), 2);
}

#[test]
fn exec_plugin_expiry_decides_when_it_runs_again() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let plugin = Plugin::new();
    let beta = "client.authentication.k8s.io/v1beta1";
    server.accept_bearer("fake-exec-token-1");
    plugin.answer(
        beta,
        serde_json::json!({"token": "fake-exec-token-1", "expirationTimestamp": "2000-01-01T00:00:00Z"}),
    );
    let config = config(&[kubeconfig_flag(&plugin.kubeconfig(&server, beta))], &[]).unwrap();
    let client = client(&config);
    request(&client, "a").expect("token");
    request(&client, "b").expect("token");
    assert_eq!(plugin.runs(), 2, "an expired credential is not reused");

    plugin.answer(
        beta,
        serde_json::json!({"token": "fake-exec-token-1", "expirationTimestamp": "2999-01-01T00:00:00Z"}),
    );
    request(&client, "c").expect("token");
    request(&client, "d").expect("token");
    assert_eq!(plugin.runs(), 3, "an unexpired credential is reused");
}

#[test]
fn exec_plugin_returning_a_client_certificate() {
    common::init_logging();
    let server = FakeApiServer::builder().client_certs().start();
    let plugin = Plugin::new();
    let v1 = "client.authentication.k8s.io/v1";
    let (cert, key) = server.issue_client_cert("dev-user");
    plugin.answer(
        v1,
        serde_json::json!({"clientCertificateData": cert, "clientKeyData": key}),
    );
    let config = config(&[kubeconfig_flag(&plugin.kubeconfig(&server, v1))], &[]).unwrap();
    let client = client(&config);
    request(&client, "a").expect("token");
    request(&client, "b").expect("token");
    assert_eq!(server.client_cert_calls(), 2);
    assert_eq!(plugin.runs(), 1);
}

#[test]
fn a_failing_exec_plugin_names_the_kubeconfig_and_its_stderr() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let plugin = Plugin::new();
    let v1 = "client.authentication.k8s.io/v1";
    let path = plugin.kubeconfig(&server, v1);
    std::fs::write(plugin.dir.join("fail"), "").unwrap();
    let config = config(&[kubeconfig_flag(&path)], &[]).unwrap();
    let err = request(&client(&config), "vault").unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "token request for audience \"vault\" failed: no api credential: kubeconfig {}, \
             context \"dev\", user \"dev-user\": exec plugin {} exited with status 1: error: \
             you are not logged in; run the login command",
            path.display(),
            plugin.dir.join("plugin.sh").display()
        )
    );
    assert!(!err.is_retryable());
    assert_eq!(server.total_calls(), 0);
}

/// Two contexts: `good` reaches the fake server, `other` (the current one) names another
/// namespace.
fn two_contexts(server: &FakeApiServer, dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join("config");
    let text = format!(
        "apiVersion: v1
kind: Config
current-context: other
clusters:
- name: fake
  cluster:
    server: {server}
    certificate-authority: {ca}
contexts:
- name: other
  context: {{cluster: fake, user: u, namespace: other-ns}}
- name: good
  context: {{cluster: fake, user: u, namespace: monitoring}}
users:
- name: u
  user: {{token: {KUBECONFIG_TOKEN}}}
",
        server = server.url(),
        ca = server.ca_file().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn context_selection_and_overrides() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    server.accept_bearer(KUBECONFIG_TOKEN);
    let dir = TempDir::new();
    let path = two_contexts(&server, &dir);

    let current = config(&[kubeconfig_flag(&path)], &[]).unwrap();
    assert_eq!(current.api.namespace, "other-ns");

    let good = config(&[kubeconfig_flag(&path), "--context=good".into()], &[]).unwrap();
    assert_eq!(good.api.namespace, "monitoring");
    request(&client(&good), "vault").expect("token");

    // $KUBECONFIG's first file is used when no flag names one and we are not in a pod.
    let list = format!("{}:/nonexistent/second", path.display());
    let from_env = config(&["--context=good".into()], &[("KUBECONFIG", &list)]).unwrap();
    assert_eq!(from_env.api.namespace, "monitoring");
    assert_eq!(from_env.api.server, server.url());

    // Flags override the kubeconfig.
    let overridden = config(
        &[
            kubeconfig_flag(&path),
            "--apiserver=https://127.0.0.1:1/".into(),
            "--namespace=team-b".into(),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(overridden.api.server, "https://127.0.0.1:1");
    assert_eq!(overridden.api.namespace, "team-b");

    // A flag naming a mounted file keeps the in-cluster behaviour despite $KUBECONFIG.
    let mounted = config(
        &[
            format!("--apiserver-token-file={}", server.token_file().display()),
            format!("--apiserver-ca-file={}", server.ca_file().display()),
            format!("--apiserver={}", server.url()),
            "--namespace=monitoring".into(),
        ],
        &[("KUBECONFIG", &list)],
    )
    .unwrap();
    assert_eq!(
        mounted.api.credential.token_file(),
        Some(server.token_file())
    );
}

#[test]
fn broken_kubeconfigs_name_the_file_the_context_and_the_missing_piece() {
    let server = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let good = two_contexts(&server, &dir);
    let p = good.display().to_string();
    let flag = kubeconfig_flag(&good);

    let err = config(&[flag.clone(), "--context=nope".into()], &[]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "cannot use the kubeconfig named by --kubeconfig: kubeconfig {p} has no context \
             \"nope\" (contexts: other, good)"
        )
    );

    let err = config(&["--context=good".into()], &[]).unwrap_err();
    assert_eq!(
        err,
        "--context is set but no kubeconfig is in use: pass --kubeconfig"
    );

    let write = |text: &str| {
        let path = dir.join("broken");
        std::fs::write(&path, text).unwrap();
        path
    };
    let cluster = format!(
        "clusters:\n- name: c\n  cluster: {{server: {}, certificate-authority: {}}}\n",
        server.url(),
        server.ca_file().display()
    );
    let context = "contexts:\n- name: dev\n  context: {cluster: c, user: u}\n";
    let broken = dir.join("broken").display().to_string();
    for (text, expected) in [
        (
            format!("{cluster}{context}users:\n- name: u\n  user: {{}}\n"),
            "context \"dev\": user \"u\" has no credentials we can use (token, tokenFile, \
             client-certificate with client-key, or exec)"
                .to_string(),
        ),
        (
            format!(
                "{cluster}{context}users:\n- name: u\n  user:\n    auth-provider:\n      \
                 name: gcp\n      config: {{access-token: fake}}\n"
            ),
            "context \"dev\": user \"u\" uses auth-provider \"gcp\", which is not supported; \
             use an exec plugin or a token"
                .to_string(),
        ),
        (
            format!("{cluster}{context}"),
            "context \"dev\": no user \"u\"".to_string(),
        ),
        (
            format!("{context}users:\n- name: u\n  user: {{token: fake}}\n"),
            "context \"dev\": no cluster \"c\"".to_string(),
        ),
        (
            format!(
                "{cluster}{context}users:\n- name: u\n  user: {{client-certificate: nope.crt, \
                 client-key: nope.key}}\n"
            ),
            format!(
                "context \"dev\", user \"u\": cannot read client-certificate {}: No such \
                 file or directory (os error 2)",
                dir.join("nope.crt").display()
            ),
        ),
        (
            format!(
                "{cluster}{context}users:\n- name: u\n  user: {{client-certificate-data: \"%%%\", \
                 client-key-data: eA==}}\n"
            ),
            "context \"dev\", user \"u\": client-certificate-data is not valid base64".to_string(),
        ),
        (
            format!(
                "{cluster}{context}users:\n- name: u\n  user:\n    exec: {{apiVersion: \
                 client.authentication.k8s.io/v1alpha1, command: x}}\n"
            ),
            "context \"dev\", user \"u\": exec.apiVersion \"client.authentication.k8s.io/v1alpha1\" \
             is not supported; use client.authentication.k8s.io/v1 or \
             client.authentication.k8s.io/v1beta1"
                .to_string(),
        ),
    ] {
        let path = write(&format!("current-context: dev\n{text}"));
        let err = config(&[kubeconfig_flag(&path)], &[]).unwrap_err();
        assert_eq!(
            err,
            format!("cannot use the kubeconfig named by --kubeconfig: kubeconfig {broken}, {expected}"),
            "{text}"
        );
    }

    let path = write(&format!("{cluster}{context}"));
    let err = config(&[kubeconfig_flag(&path)], &[]).unwrap_err();
    assert!(
        err.ends_with(&format!(
            "kubeconfig {broken} sets no current-context: pass --context"
        )),
        "{err}"
    );

    let path = write("clusters: [\n  - {name: c\n");
    let err = config(&[kubeconfig_flag(&path)], &[]).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "cannot use the kubeconfig named by --kubeconfig: kubeconfig {broken} is not valid YAML: "
        )),
        "{err}"
    );

    let missing = dir.join("missing");
    let err = config(&[kubeconfig_flag(&missing)], &[]).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "cannot use the kubeconfig named by --kubeconfig: cannot read kubeconfig {}: ",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn tls_server_name_is_what_the_certificate_is_checked_against() {
    let server = FakeApiServer::builder().start();
    server.accept_bearer(KUBECONFIG_TOKEN);
    let dir = TempDir::new();
    let ca_data = encode_base64(server.ca_pem().as_bytes());
    let client_for = |name: &str| {
        let path = dir.join(&format!("config-{name}"));
        let cluster =
            format!("    certificate-authority-data: {ca_data}\n    tls-server-name: {name}");
        let user = format!("    token: {KUBECONFIG_TOKEN}");
        std::fs::write(
            &path,
            one_context(&server.url(), &cluster, &user, "monitoring"),
        )
        .unwrap();
        client(&config(&[kubeconfig_flag(&path)], &[]).expect("config"))
    };

    // The certificate names localhost: that name works, connecting to the server's address.
    let issued = request(&client_for("localhost"), "named").expect("token");
    assert_eq!(audience_of(issued.token.expose()), Some("named"));

    // The server's own address is in the certificate too, so a failure here can only come
    // from verifying against the configured name.
    let err = request(&client_for("not-in-the-cert.example"), "named").unwrap_err();
    assert!(matches!(err, KubeError::Tls { .. }), "{err:?}");
    assert_eq!(server.calls_for("named"), 1);
}
