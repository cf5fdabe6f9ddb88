//! Kubeconfig files: reading the one context we use into the API settings we need.
//!
//! Only the fields the TokenRequest client can honour are read: the context's cluster
//! (`server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`, `tls-server-name`),
//! its user (`token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`,
//! `exec`) and its `namespace`. Anything else is ignored, except credentials we cannot use
//! (`auth-provider`, `username`/`password`), which are refused by name rather than silently
//! skipped. Relative paths are resolved against the kubeconfig's directory, as kubectl does,
//! and every file named is checked to be readable here, so that a typo is a start-up error.
//!
//! Parsing needs the `kubeconfig` cargo feature (the YAML parser); without it [`load`] fails
//! with [`KubeconfigError::NotBuilt`]. This module does not merge several files, and does not
//! talk to the API server or run exec plugins ([`crate::exec`] does).

use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{ApiCredential, ClientCertSource, PemSource};

/// The parts of one kubeconfig context that configure API access.
#[derive(Debug, Clone)]
pub struct ResolvedContext {
    /// The context's name.
    pub context: String,
    /// The cluster's `server`, checked and without trailing slashes.
    pub server: String,
    /// `certificate-authority-data`, or else `certificate-authority`.
    pub ca: Option<PemSource>,
    /// The cluster's `insecure-skip-tls-verify`.
    pub insecure_skip_tls_verify: bool,
    /// The cluster's `tls-server-name`.
    pub tls_server_name: Option<String>,
    /// The user's `client-certificate(-data)` and `client-key(-data)`.
    pub client_cert: Option<ClientCertSource>,
    /// `token`, `tokenFile` or `exec`; [`ApiCredential::None`] when the user only has a
    /// client certificate.
    pub credential: ApiCredential,
    /// The context's `namespace`, if it sets one (not validated here).
    pub namespace: Option<String>,
}

/// Why a kubeconfig gives no usable context. Holds paths and names, never a credential.
#[derive(Debug)]
pub enum KubeconfigError {
    /// This binary was built without the `kubeconfig` feature.
    NotBuilt { path: PathBuf },
    /// The file cannot be read.
    Read { path: PathBuf, source: io::Error },
    /// The file is not YAML; `reason` is the parser's position and complaint.
    ParseYaml { path: PathBuf, reason: String },
    /// A field has the wrong type or an unusable value. `place` says whose field it is.
    InvalidField {
        path: PathBuf,
        place: String,
        field: &'static str,
        reason: String,
    },
    /// No `--context` was given and the file sets no `current-context`.
    NoCurrentContext { path: PathBuf },
    /// The context named does not exist; `known` lists those that do.
    NoSuchContext {
        path: PathBuf,
        context: String,
        known: Vec<String>,
    },
    /// The context names a cluster that does not exist.
    NoSuchCluster {
        path: PathBuf,
        context: String,
        cluster: String,
    },
    /// The context names a user that does not exist.
    NoSuchUser {
        path: PathBuf,
        context: String,
        user: String,
    },
    /// The cluster has no `server`.
    NoServer {
        path: PathBuf,
        context: String,
        cluster: String,
    },
    /// The user has none of the credentials we can use.
    NoCredentials {
        path: PathBuf,
        context: String,
        user: String,
    },
    /// The user authenticates in a way this program does not implement.
    Unsupported {
        path: PathBuf,
        context: String,
        user: String,
        what: String,
    },
    /// A file the kubeconfig names cannot be read.
    ReadReferencedFile {
        path: PathBuf,
        place: String,
        field: &'static str,
        file: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for KubeconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeconfigError::NotBuilt { path } => write!(
                f,
                "kubeconfig {}: this build cannot read kubeconfig files (it was built without \
                 the kubeconfig feature)",
                path.display()
            ),
            KubeconfigError::Read { path, .. } => {
                write!(f, "cannot read kubeconfig {}", path.display())
            }
            KubeconfigError::ParseYaml { path, reason } => {
                write!(
                    f,
                    "kubeconfig {} is not valid YAML: {reason}",
                    path.display()
                )
            }
            KubeconfigError::InvalidField {
                path,
                place,
                field,
                reason,
            } => write!(
                f,
                "kubeconfig {}, {place}: {field} {reason}",
                path.display()
            ),
            KubeconfigError::NoCurrentContext { path } => write!(
                f,
                "kubeconfig {} sets no current-context: pass --context",
                path.display()
            ),
            KubeconfigError::NoSuchContext {
                path,
                context,
                known,
            } => {
                write!(
                    f,
                    "kubeconfig {} has no context {context:?}",
                    path.display()
                )?;
                if known.is_empty() {
                    write!(f, " (it has no contexts)")
                } else {
                    write!(f, " (contexts: {})", known.join(", "))
                }
            }
            KubeconfigError::NoSuchCluster {
                path,
                context,
                cluster,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: no cluster {cluster:?}",
                path.display()
            ),
            KubeconfigError::NoSuchUser {
                path,
                context,
                user,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: no user {user:?}",
                path.display()
            ),
            KubeconfigError::NoServer {
                path,
                context,
                cluster,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: cluster {cluster:?} has no server",
                path.display()
            ),
            KubeconfigError::NoCredentials {
                path,
                context,
                user,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: user {user:?} has no credentials we can \
                 use (token, tokenFile, client-certificate with client-key, or exec)",
                path.display()
            ),
            KubeconfigError::Unsupported {
                path,
                context,
                user,
                what,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: user {user:?} uses {what}, which is not \
                 supported; use an exec plugin or a token",
                path.display()
            ),
            KubeconfigError::ReadReferencedFile {
                path,
                place,
                field,
                file,
                ..
            } => write!(
                f,
                "kubeconfig {}, {place}: cannot read {field} {}",
                path.display(),
                file.display()
            ),
        }
    }
}

impl Error for KubeconfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            KubeconfigError::Read { source, .. }
            | KubeconfigError::ReadReferencedFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads `path` and resolves `context` (or the file's `current-context`).
///
/// Fails when the file cannot be read or parsed, the context, its cluster or its user is
/// missing, the cluster has no usable `server`, the user has no credential we can use, or a
/// file the context names cannot be read; see [`KubeconfigError`]. Without the `kubeconfig`
/// feature it always fails with [`KubeconfigError::NotBuilt`].
pub fn load(path: &Path, context: Option<&str>) -> Result<ResolvedContext, KubeconfigError> {
    #[cfg(feature = "kubeconfig")]
    {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        yaml::resolve(&text, path, context)
    }
    #[cfg(not(feature = "kubeconfig"))]
    {
        let _ = context;
        Err(KubeconfigError::NotBuilt {
            path: path.to_path_buf(),
        })
    }
}

/// The mapping from YAML nodes to [`ResolvedContext`].
#[cfg(feature = "kubeconfig")]
mod yaml {
    use super::*;
    use crate::exec::{
        ExecCluster, ExecConfig, DEFAULT_EXEC_TIMEOUT, EXEC_API_V1, EXEC_API_V1BETA1,
    };
    use yaml_rust2::{Yaml, YamlLoader};

    /// One file being resolved: its path and directory, for errors and relative paths.
    struct Doc<'a> {
        path: &'a Path,
        dir: PathBuf,
    }

    pub(super) fn resolve(
        text: &str,
        path: &Path,
        context: Option<&str>,
    ) -> Result<ResolvedContext, KubeconfigError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| KubeconfigError::ParseYaml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let doc = Doc {
            path,
            dir: path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        let root = docs.first().unwrap_or(&Yaml::Null);
        if !matches!(root, Yaml::Hash(_)) {
            return Err(doc.invalid("the top level", "document", "is not a mapping"));
        }

        let context_name = match context {
            Some(name) => name.to_string(),
            None => doc
                .string(root, "the top level", "current-context")?
                .filter(|c| !c.is_empty())
                .ok_or_else(|| KubeconfigError::NoCurrentContext {
                    path: path.to_path_buf(),
                })?,
        };
        let contexts = doc.named_list(root, "contexts")?;
        let Some(ctx) = find(&contexts, &context_name) else {
            return Err(KubeconfigError::NoSuchContext {
                path: path.to_path_buf(),
                context: context_name,
                known: contexts.iter().map(|(name, _)| name.clone()).collect(),
            });
        };
        let ctx_place = format!("context {context_name:?}");
        let cluster_name = doc.string(ctx, &ctx_place, "cluster")?.unwrap_or_default();
        let user_name = doc.string(ctx, &ctx_place, "user")?.unwrap_or_default();
        let namespace = doc
            .string(ctx, &ctx_place, "namespace")?
            .filter(|n| !n.is_empty());

        let clusters = doc.named_list(root, "clusters")?;
        let cluster =
            find(&clusters, &cluster_name).ok_or_else(|| KubeconfigError::NoSuchCluster {
                path: path.to_path_buf(),
                context: context_name.clone(),
                cluster: cluster_name.clone(),
            })?;
        let users = doc.named_list(root, "users")?;
        let user = find(&users, &user_name).ok_or_else(|| KubeconfigError::NoSuchUser {
            path: path.to_path_buf(),
            context: context_name.clone(),
            user: user_name.clone(),
        })?;

        let cluster_place = format!("context {context_name:?}, cluster {cluster_name:?}");
        let server = doc
            .string(cluster, &cluster_place, "server")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| KubeconfigError::NoServer {
                path: path.to_path_buf(),
                context: context_name.clone(),
                cluster: cluster_name.clone(),
            })?;
        let server = crate::config::parse_api_server_url(&server).map_err(|reason| {
            doc.invalid(&cluster_place, "server", &format!("{server:?}: {reason}"))
        })?;
        let ca = doc.pem(
            cluster,
            &cluster_place,
            "certificate-authority-data",
            "certificate-authority",
        )?;
        let insecure_skip_tls_verify = doc
            .boolean(cluster, &cluster_place, "insecure-skip-tls-verify")?
            .unwrap_or(false);
        let tls_server_name = doc
            .string(cluster, &cluster_place, "tls-server-name")?
            .filter(|s| !s.is_empty());

        let user_place = format!("context {context_name:?}, user {user_name:?}");
        let unsupported = |what: String| KubeconfigError::Unsupported {
            path: path.to_path_buf(),
            context: context_name.clone(),
            user: user_name.clone(),
            what,
        };
        let provider = &user["auth-provider"];
        if !provider.is_badvalue() && !provider.is_null() {
            let name = doc.string(provider, &user_place, "name")?;
            return Err(unsupported(match name {
                Some(name) => format!("auth-provider {name:?}"),
                None => "an auth-provider".to_string(),
            }));
        }
        if doc.string(user, &user_place, "username")?.is_some()
            || doc.string(user, &user_place, "password")?.is_some()
        {
            return Err(unsupported("username and password".to_string()));
        }

        let cert = doc.pem(
            user,
            &user_place,
            "client-certificate-data",
            "client-certificate",
        )?;
        let key = doc.pem(user, &user_place, "client-key-data", "client-key")?;
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCertSource { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(doc.invalid(
                    &user_place,
                    "client-certificate",
                    "is set without client-key(-data)",
                ))
            }
            (None, Some(_)) => {
                return Err(doc.invalid(
                    &user_place,
                    "client-key",
                    "is set without client-certificate(-data)",
                ))
            }
        };

        let exec = &user["exec"];
        let credential = if !exec.is_badvalue() && !exec.is_null() {
            let cluster_info = ExecCluster {
                server: server.clone(),
                tls_server_name: tls_server_name.clone(),
                insecure_skip_tls_verify,
                certificate_authority_data: match &ca {
                    Some(PemSource::Inline { pem, .. }) => Some(crate::base64::encode(pem)),
                    Some(PemSource::File(file)) => {
                        std::fs::read(file).ok().map(|b| crate::base64::encode(&b))
                    }
                    None => None,
                },
            };
            ApiCredential::Exec(doc.exec(exec, &user_place, cluster_info)?)
        } else if let Some(token) = doc
            .string(user, &user_place, "token")?
            .filter(|t| !t.is_empty())
        {
            ApiCredential::Token {
                origin: format!("kubeconfig {}, {user_place}", path.display()),
                token: crate::token::Token::new(token),
            }
        } else if let Some(file) = doc
            .string(user, &user_place, "tokenFile")?
            .filter(|t| !t.is_empty())
        {
            let file = doc.relative(&file);
            doc.check_readable(&user_place, "tokenFile", &file)?;
            ApiCredential::TokenFile(file)
        } else if client_cert.is_some() {
            ApiCredential::None
        } else {
            return Err(KubeconfigError::NoCredentials {
                path: path.to_path_buf(),
                context: context_name,
                user: user_name,
            });
        };

        Ok(ResolvedContext {
            context: context_name,
            server,
            ca,
            insecure_skip_tls_verify,
            tls_server_name,
            client_cert,
            credential,
            namespace,
        })
    }

    /// The entry called `name` in a `[{name: …, <kind>: {…}}]` list: its `<kind>` mapping.
    fn find<'y>(list: &[(String, &'y Yaml)], name: &str) -> Option<&'y Yaml> {
        list.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    impl Doc<'_> {
        fn invalid(&self, place: &str, field: &'static str, reason: &str) -> KubeconfigError {
            KubeconfigError::InvalidField {
                path: self.path.to_path_buf(),
                place: place.to_string(),
                field,
                reason: reason.to_string(),
            }
        }

        /// `contexts`, `clusters` or `users`: `(name, body)` pairs, where the body is the
        /// entry's `context`, `cluster` or `user` mapping.
        fn named_list<'y>(
            &self,
            root: &'y Yaml,
            key: &'static str,
        ) -> Result<Vec<(String, &'y Yaml)>, KubeconfigError> {
            let body_key = key.trim_end_matches('s');
            match &root[key] {
                Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
                Yaml::Array(items) => items
                    .iter()
                    .map(|item| {
                        let name = scalar(&item["name"]).ok_or_else(|| {
                            self.invalid("the top level", key, "has an entry without a name")
                        })?;
                        Ok((name, &item[body_key]))
                    })
                    .collect(),
                _ => Err(self.invalid("the top level", key, "is not a list")),
            }
        }

        /// A scalar field as text; `None` when absent or null.
        fn string(
            &self,
            node: &Yaml,
            place: &str,
            key: &'static str,
        ) -> Result<Option<String>, KubeconfigError> {
            match &node[key] {
                Yaml::BadValue | Yaml::Null => Ok(None),
                other => scalar(other)
                    .map(Some)
                    .ok_or_else(|| self.invalid(place, key, "is not a string")),
            }
        }

        fn boolean(
            &self,
            node: &Yaml,
            place: &str,
            key: &'static str,
        ) -> Result<Option<bool>, KubeconfigError> {
            match &node[key] {
                Yaml::BadValue | Yaml::Null => Ok(None),
                Yaml::Boolean(b) => Ok(Some(*b)),
                _ => Err(self.invalid(place, key, "is not true or false")),
            }
        }

        /// Inline base64 data (`data_key`) wins over a file (`file_key`), as in kubectl.
        fn pem(
            &self,
            node: &Yaml,
            place: &str,
            data_key: &'static str,
            file_key: &'static str,
        ) -> Result<Option<PemSource>, KubeconfigError> {
            if let Some(data) = self
                .string(node, place, data_key)?
                .filter(|d| !d.is_empty())
            {
                let pem = crate::base64::decode(&data)
                    .ok_or_else(|| self.invalid(place, data_key, "is not valid base64"))?;
                return Ok(Some(PemSource::Inline {
                    origin: format!("kubeconfig {}, {place}, {data_key}", self.path.display()),
                    pem,
                }));
            }
            match self
                .string(node, place, file_key)?
                .filter(|f| !f.is_empty())
            {
                None => Ok(None),
                Some(file) => {
                    let file = self.relative(&file);
                    self.check_readable(place, file_key, &file)?;
                    Ok(Some(PemSource::File(file)))
                }
            }
        }

        fn exec(
            &self,
            exec: &Yaml,
            place: &str,
            cluster: ExecCluster,
        ) -> Result<ExecConfig, KubeconfigError> {
            let api_version = self.string(exec, place, "apiVersion")?.unwrap_or_default();
            if api_version != EXEC_API_V1 && api_version != EXEC_API_V1BETA1 {
                return Err(self.invalid(
                    place,
                    "exec.apiVersion",
                    &format!(
                        "{api_version:?} is not supported; use {EXEC_API_V1} or \
                         {EXEC_API_V1BETA1}"
                    ),
                ));
            }
            let command = self
                .string(exec, place, "command")?
                .filter(|c| !c.is_empty())
                .ok_or_else(|| self.invalid(place, "exec.command", "is missing"))?;
            // As kubectl does: a command with a path separator is relative to the
            // kubeconfig, a bare name is looked up in PATH.
            let command = if command.contains('/') {
                self.relative(&command)
            } else {
                PathBuf::from(command)
            };
            let args = match &exec["args"] {
                Yaml::BadValue | Yaml::Null => Vec::new(),
                Yaml::Array(items) => items
                    .iter()
                    .map(|a| {
                        scalar(a).ok_or_else(|| {
                            self.invalid(place, "exec.args", "holds something that is not a string")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(self.invalid(place, "exec.args", "is not a list")),
            };
            let env = match &exec["env"] {
                Yaml::BadValue | Yaml::Null => Vec::new(),
                Yaml::Array(items) => items
                    .iter()
                    .map(|e| match (scalar(&e["name"]), scalar(&e["value"])) {
                        (Some(name), value) if !name.is_empty() => {
                            Ok((name, value.unwrap_or_default()))
                        }
                        _ => Err(self.invalid(place, "exec.env", "has an entry without a name")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(self.invalid(place, "exec.env", "is not a list")),
            };
            if self.string(exec, place, "interactiveMode")?.as_deref() == Some("Always") {
                return Err(self.invalid(
                    place,
                    "exec.interactiveMode",
                    "is Always, but the proxy has no terminal to run the plugin in",
                ));
            }
            let provide_cluster_info = self
                .boolean(exec, place, "provideClusterInfo")?
                .unwrap_or(false);
            Ok(ExecConfig {
                origin: format!("kubeconfig {}, {place}", self.path.display()),
                api_version,
                command,
                args,
                env,
                cluster: provide_cluster_info.then_some(cluster),
                timeout: DEFAULT_EXEC_TIMEOUT,
            })
        }

        fn relative(&self, file: &str) -> PathBuf {
            let file = Path::new(file);
            if file.is_absolute() {
                file.to_path_buf()
            } else {
                self.dir.join(file.strip_prefix("./").unwrap_or(file))
            }
        }

        fn check_readable(
            &self,
            place: &str,
            field: &'static str,
            file: &Path,
        ) -> Result<(), KubeconfigError> {
            std::fs::read(file)
                .map(drop)
                .map_err(|source| KubeconfigError::ReadReferencedFile {
                    path: self.path.to_path_buf(),
                    place: place.to_string(),
                    field,
                    file: file.to_path_buf(),
                    source,
                })
        }
    }

    /// A scalar as the text it was written as (YAML types `true` or `123` for us).
    fn scalar(node: &Yaml) -> Option<String> {
        match node {
            Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            Yaml::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "kubeconfig")]
    mod mapping {
        use super::super::*;
        use crate::exec::EXEC_API_V1;

        const PATH: &str = "/home/dev/.kube/config";

        fn resolve(text: &str, context: Option<&str>) -> Result<ResolvedContext, String> {
            yaml::resolve(text, Path::new(PATH), context).map_err(|e| e.to_string())
        }

        #[test]
        fn reads_inline_data_and_prefers_it_over_files() {
            let text = format!(
                r#"
current-context: dev
clusters:
- name: c
  cluster:
    server: https://kube.example:6443/
    certificate-authority: ignored.crt
    certificate-authority-data: {}
    tls-server-name: kube.internal
contexts:
- name: dev
  context: {{cluster: c, user: u, namespace: team-a}}
users:
- name: u
  user:
    token: 12345
"#,
                crate::base64::encode(b"-----PEM-----")
            );
            let ctx = resolve(&text, None).unwrap();
            assert_eq!(ctx.context, "dev");
            assert_eq!(ctx.server, "https://kube.example:6443");
            assert_eq!(
                ctx.ca,
                Some(PemSource::Inline {
                    origin: format!(
                        "kubeconfig {PATH}, context \"dev\", cluster \"c\", \
                         certificate-authority-data"
                    ),
                    pem: b"-----PEM-----".to_vec(),
                })
            );
            assert_eq!(ctx.tls_server_name.as_deref(), Some("kube.internal"));
            assert!(!ctx.insecure_skip_tls_verify);
            assert_eq!(ctx.namespace.as_deref(), Some("team-a"));
            let ApiCredential::Token { token, .. } = &ctx.credential else {
                panic!("{:?}", ctx.credential);
            };
            assert_eq!(token.expose(), "12345", "a numeric scalar is read as text");
            assert!(!format!("{ctx:?}").contains("12345"));
        }

        #[test]
        fn exec_entries_resolve_commands_and_cluster_info() {
            let text = format!(
                r#"{{"current-context": "dev",
  "clusters": [{{"name": "c", "cluster": {{"server": "https://h", "insecure-skip-tls-verify": true}}}}],
  "contexts": [{{"name": "dev", "context": {{"cluster": "c", "user": "u"}}}}],
  "users": [{{"name": "u", "user": {{"exec": {{"apiVersion": "{EXEC_API_V1}",
     "command": "bin/login", "args": ["get-token", 7], "env": [{{"name": "A", "value": "b"}}],
     "provideClusterInfo": true}}}}}}]}}"#
            );
            let ctx = resolve(&text, None).unwrap();
            assert!(ctx.insecure_skip_tls_verify);
            assert_eq!(ctx.namespace, None);
            let ApiCredential::Exec(exec) = ctx.credential else {
                panic!("not exec");
            };
            assert_eq!(exec.command, PathBuf::from("/home/dev/.kube/bin/login"));
            assert_eq!(exec.args, ["get-token", "7"]);
            assert_eq!(exec.env, [("A".to_string(), "b".to_string())]);
            assert_eq!(
                exec.origin,
                format!("kubeconfig {PATH}, context \"dev\", user \"u\"")
            );
            let cluster = exec.cluster.expect("provideClusterInfo");
            assert_eq!(cluster.server, "https://h");
            assert!(cluster.insecure_skip_tls_verify);

            let bare = text.replace("bin/login", "kubelogin");
            let ctx = resolve(&bare, None).unwrap();
            let ApiCredential::Exec(exec) = ctx.credential else {
                panic!("not exec");
            };
            assert_eq!(
                exec.command,
                PathBuf::from("kubelogin"),
                "looked up in PATH"
            );
        }

        #[test]
        fn invalid_fields_are_named() {
            let base = |cluster: &str, user: &str| {
                format!(
                    "current-context: dev\nclusters:\n- name: c\n  cluster: {cluster}\n\
                     contexts:\n- name: dev\n  context: {{cluster: c, user: u}}\n\
                     users:\n- name: u\n  user: {user}\n"
                )
            };
            for (cluster, user, expected) in [
                (
                    "{}",
                    "{token: t}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\": cluster \"c\" has no \
                     server",
                ),
                (
                    "{server: \"ftp://h\"}",
                    "{token: t}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\", cluster \"c\": server \
                     \"ftp://h\": the scheme must be http or https",
                ),
                (
                    "{server: \"https://h\", insecure-skip-tls-verify: yes-please}",
                    "{token: t}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\", cluster \"c\": \
                     insecure-skip-tls-verify is not true or false",
                ),
                (
                    "{server: \"https://h\"}",
                    "{token: [a]}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\", user \"u\": token is \
                     not a string",
                ),
                (
                    "{server: \"https://h\"}",
                    "{client-key-data: eA==}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\", user \"u\": client-key \
                     is set without client-certificate(-data)",
                ),
                (
                    "{server: \"https://h\"}",
                    "{username: a, password: b}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\": user \"u\" uses \
                     username and password, which is not supported; use an exec plugin or a \
                     token",
                ),
                (
                    "{server: \"https://h\"}",
                    "{exec: {apiVersion: client.authentication.k8s.io/v1, command: x, \
                     interactiveMode: Always}}",
                    "kubeconfig /home/dev/.kube/config, context \"dev\", user \"u\": \
                     exec.interactiveMode is Always, but the proxy has no terminal to run the \
                     plugin in",
                ),
            ] {
                assert_eq!(resolve(&base(cluster, user), None).unwrap_err(), expected);
            }
            assert_eq!(
                resolve("- a\n- b\n", None).unwrap_err(),
                "kubeconfig /home/dev/.kube/config, the top level: document is not a mapping"
            );
            assert_eq!(
                resolve("contexts: {a: b}\n", Some("x")).unwrap_err(),
                "kubeconfig /home/dev/.kube/config, the top level: contexts is not a list"
            );
            assert_eq!(
                resolve("contexts: []\n", Some("x")).unwrap_err(),
                "kubeconfig /home/dev/.kube/config has no context \"x\" (it has no contexts)"
            );
        }
    }
}
