//! The example manifests in `deploy/`: every document parses, names its kind, and the
//! proxy sidecar's arguments are flags this binary accepts.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn documents(file: &str) -> Vec<Yaml> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all() -> Vec<(String, Yaml)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    names
        .into_iter()
        .flat_map(|n| documents(&n).into_iter().map(move |d| (n.clone(), d)))
        .collect()
}

#[test]
fn every_document_is_a_named_kubernetes_object() {
    let docs = all();
    assert!(docs.len() >= 10);
    for (file, doc) in docs {
        for field in ["apiVersion", "kind"] {
            assert!(
                doc[field].as_str().is_some(),
                "{file}: a document without {field}"
            );
        }
        assert!(
            doc["metadata"]["name"].as_str().is_some(),
            "{file}: {} without a name",
            doc["kind"].as_str().unwrap()
        );
    }
}

#[test]
fn the_sidecar_arguments_parse_and_the_scrape_config_is_yaml() {
    let docs = documents("prometheus.yaml");
    let pod = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Pod"))
        .unwrap();
    let containers = pod["spec"]["containers"].as_vec().unwrap();
    let sidecar = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("kube-audience-proxy"))
        .unwrap();
    let args: Vec<String> = sidecar["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let parsed = kube_audience_proxy::cli::parse_args(&args)
        .unwrap_or_else(|e| panic!("the sidecar's args do not parse: {}", e.output));
    assert!(parsed.ignored_flags.is_empty());
    assert_eq!(
        parsed.args.insecure_listen_address.as_deref(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(
        sidecar["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );

    let env: Vec<&str> = sidecar["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["SERVICE_ACCOUNT", "POD_NAME", "POD_UID"]);

    let config = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let scrape = YamlLoader::load_from_str(config["data"]["prometheus.yml"].as_str().unwrap())
        .unwrap()
        .remove(0);
    let job = &scrape["scrape_configs"][0];
    assert_eq!(job["proxy_url"].as_str(), Some("http://127.0.0.1:8080"));
    assert_eq!(
        job["params"]["kubernetes-audience"][0].as_str(),
        Some("example-app")
    );
}

#[test]
fn the_token_role_is_limited_to_one_service_account() {
    let docs = documents("rbac.yaml");
    let role = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Role"))
        .unwrap();
    let rule = &role["rules"][0];
    assert_eq!(rule["resources"][0].as_str(), Some("serviceaccounts/token"));
    assert_eq!(rule["verbs"].as_vec().unwrap().len(), 1);
    assert_eq!(rule["verbs"][0].as_str(), Some("create"));
    assert_eq!(rule["resourceNames"][0].as_str(), Some("prometheus"));
}
