//! Reading `deploy/`: the kustomization, and every document of every file it lists
//! deserialized into its k8s-openapi type, strictly: a field the type does not have (misspelt,
//! misplaced) is an error here, where k8s-openapi would skip it. The other modules look
//! objects up through [`Manifests`].

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    path::Path,
};

use k8s_openapi::{
    Resource,
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Namespace, PodSpec, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{AGENT, deploy_dir, read};

/// `deploy/kustomization.yaml`: only the fields this checker understands, so that a new one
/// is noticed here rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub resources: Vec<String>,
    #[serde(default)]
    pub images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeImage {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
}

/// A manifest document as its k8s-openapi type.
#[derive(Debug)]
pub enum Object {
    DaemonSet(Box<DaemonSet>),
    ConfigMap(ConfigMap),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Namespace(Namespace),
}

impl Object {
    fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::DaemonSet(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::ServiceAccount(o) => &o.metadata,
            Self::ClusterRole(o) => &o.metadata,
            Self::ClusterRoleBinding(o) => &o.metadata,
            Self::Namespace(o) => &o.metadata,
        }
    }

    fn is_namespaced(&self) -> bool {
        matches!(
            self,
            Self::DaemonSet(_) | Self::ConfigMap(_) | Self::ServiceAccount(_)
        )
    }
}

/// Why a manifest document was rejected.
#[derive(Debug)]
enum Rejected {
    /// No k8s-openapi type is wired up here for this `apiVersion` and `kind`.
    UnknownKind(String),
    /// The document does not fit its type (a wrong value type, a missing required field).
    Invalid { path: String, message: String },
    /// Fields its type does not have, misspelt or misplaced, by path: the API server would
    /// drop or refuse them, and k8s-openapi ignores them when deserializing.
    UnknownFields(Vec<String>),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind(kind) => write!(f, "no k8s-openapi type is wired up for {kind}"),
            Self::Invalid { path, message } => write!(f, "at {path}: {message}"),
            Self::UnknownFields(paths) => write!(f, "unknown fields: {}", paths.join(", ")),
        }
    }
}

/// Deserializes one document into the type its `apiVersion` and `kind` name.
fn parse_object(doc: &Value) -> Result<Object, Rejected> {
    let field = |name: &str| doc.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let is = |api: &str, k: &str| api_version == api && kind == k;
    Ok(if is(DaemonSet::API_VERSION, DaemonSet::KIND) {
        Object::DaemonSet(Box::new(strict(doc)?))
    } else if is(ConfigMap::API_VERSION, ConfigMap::KIND) {
        Object::ConfigMap(strict(doc)?)
    } else if is(ServiceAccount::API_VERSION, ServiceAccount::KIND) {
        Object::ServiceAccount(strict(doc)?)
    } else if is(ClusterRole::API_VERSION, ClusterRole::KIND) {
        Object::ClusterRole(strict(doc)?)
    } else if is(ClusterRoleBinding::API_VERSION, ClusterRoleBinding::KIND) {
        Object::ClusterRoleBinding(strict(doc)?)
    } else if is(Namespace::API_VERSION, Namespace::KIND) {
        Object::Namespace(strict(doc)?)
    } else {
        return Err(Rejected::UnknownKind(format!("{api_version:?} {kind:?}")));
    })
}

/// Deserializes `doc` into `T` and rejects it unless serializing `T` gives every field back:
/// k8s-openapi skips unknown fields, so whatever the round trip loses is unknown to the type.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, Rejected> {
    let typed: T =
        serde_path_to_error::deserialize(doc.clone()).map_err(|e| Rejected::Invalid {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    let back = serde_json::to_value(&typed).expect("a k8s-openapi object serializes");
    let mut lost = Vec::new();
    lost_fields(doc, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(Rejected::UnknownFields(lost))
    }
}

/// Collects the paths of `original` that `back` lacks or holds differently.
fn lost_fields(original: &Value, back: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(original), Value::Object(back)) => {
            for (key, value) in original {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match back.get(key) {
                    Some(back) => lost_fields(value, back, &path, lost),
                    None => lost.push(path),
                }
            }
        }
        (Value::Array(original), Value::Array(back)) if original.len() == back.len() => {
            for (i, (original, back)) in original.iter().zip(back).enumerate() {
                lost_fields(original, back, &format!("{path}[{i}]"), lost);
            }
        }
        _ if original == back => {}
        _ => lost.push(path.to_owned()),
    }
}

/// The YAML documents of `text`, empty ones skipped.
fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(Value::deserialize)
        .filter(|doc| !matches!(doc, Ok(Value::Null)))
        .collect()
}

/// Every manifest the kustomization lists, strictly deserialized.
pub struct Manifests {
    pub kustomization: Kustomization,
    /// Each object with where it came from (`file#document`), for messages.
    pub objects: Vec<(String, Object)>,
}

impl Manifests {
    pub fn load() -> Self {
        let path = deploy_dir().join("kustomization.yaml");
        let kustomization: Kustomization = serde_yaml_ng::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut objects = Vec::new();
        for file in &kustomization.resources {
            let path = deploy_dir().join(file);
            let docs = yaml_documents(&read(&path))
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            assert!(!docs.is_empty(), "{file} holds no document");
            for (i, doc) in docs.iter().enumerate() {
                let origin = format!("{file}#{i}");
                let object = parse_object(doc).unwrap_or_else(|e| panic!("{origin}: {e}"));
                objects.push((origin, object));
            }
        }
        Self {
            kustomization,
            objects,
        }
    }

    pub fn namespace(&self) -> &str {
        self.kustomization
            .namespace
            .as_deref()
            .expect("kustomization.yaml names the namespace")
    }

    pub fn daemonset(&self) -> &DaemonSet {
        let mut all = self.objects.iter().filter_map(|(_, o)| match o {
            Object::DaemonSet(ds) => Some(&**ds),
            _ => None,
        });
        let ds = all.next().expect("the manifests hold a DaemonSet");
        assert!(all.next().is_none(), "the manifests hold one DaemonSet");
        ds
    }

    pub fn pod(&self) -> &PodSpec {
        self.daemonset()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("the DaemonSet has a pod template")
    }

    pub fn agent(&self) -> &Container {
        self.pod()
            .containers
            .iter()
            .find(|c| c.name == AGENT)
            .unwrap_or_else(|| panic!("the DaemonSet has no container {AGENT:?}"))
    }

    pub fn init_container(&self, name: &str) -> &Container {
        self.pod()
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no init container {name:?}"))
    }

    pub fn all_containers(&self) -> impl Iterator<Item = &Container> {
        let pod = self.pod();
        pod.init_containers.iter().flatten().chain(&pod.containers)
    }

    pub fn config_map(&self, name: &str) -> &ConfigMap {
        self.objects
            .iter()
            .find_map(|(_, o)| match o {
                Object::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(name) => Some(cm),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the manifests hold no ConfigMap {name:?}"))
    }

    /// The `ConfigMap` that the `DaemonSet` volume named `volume` projects.
    pub fn volume_config_map(&self, volume: &str) -> &ConfigMap {
        let source = self
            .pod()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.config_map.as_ref())
            .unwrap_or_else(|| panic!("the DaemonSet has no ConfigMap volume {volume:?}"));
        self.config_map(&source.name)
    }

    /// The init containers' scripts, by key.
    pub fn script(&self, key: &str) -> &str {
        let cm = self.config_map("hostgw-node-init");
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("ConfigMap hostgw-node-init has no {key}"))
    }
}

#[test]
fn kustomization_lists_every_manifest_and_nothing_else() {
    let manifests = Manifests::load();
    let k = &manifests.kustomization;
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let listed: BTreeSet<&str> = k.resources.iter().map(String::as_str).collect();
    assert_eq!(
        listed.len(),
        k.resources.len(),
        "a resource is listed twice"
    );
    for file in &listed {
        assert!(
            deploy_dir().join(file).is_file(),
            "{file} is listed but missing"
        );
    }
    let on_disk: BTreeSet<String> = fs::read_dir(deploy_dir())
        .expect("deploy/ is readable")
        .map(|e| {
            e.expect("deploy/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml")
        })
        .filter(|n| n != "kustomization.yaml")
        .collect();
    for file in &on_disk {
        assert!(
            listed.contains(file.as_str()),
            "deploy/{file} is not in kustomization.yaml: `kubectl apply -k` would skip it"
        );
    }
}

#[test]
fn every_document_deserializes_strictly_into_its_type() {
    // Manifests::load panics on any document that does not; here, the expected set.
    let manifests = Manifests::load();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, object) in &manifests.objects {
        let kind = match object {
            Object::DaemonSet(_) => "DaemonSet",
            Object::ConfigMap(_) => "ConfigMap",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Namespace(_) => "Namespace",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let expected = BTreeMap::from([
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 1),
        ("ConfigMap", 2),
        ("DaemonSet", 1),
        ("ServiceAccount", 1),
    ]);
    assert_eq!(kinds, expected, "the objects in deploy/");

    let namespace = manifests.namespace();
    for (origin, object) in &manifests.objects {
        let meta = object.metadata();
        assert!(meta.name.is_some(), "{origin} has no name");
        if object.is_namespaced() {
            assert_eq!(
                meta.namespace.as_deref(),
                Some(namespace),
                "{origin}: the namespace kustomization.yaml sets, so that `kubectl apply -f` \
                 agrees with `kubectl apply -k`"
            );
        } else {
            assert_eq!(meta.namespace, None, "{origin} is cluster-scoped");
        }
    }
}

#[test]
fn checker_rejects_unknown_fields_wrong_types_and_unknown_kinds() {
    let daemonset = r"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x, namespace: kube-system}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      hostNetwork: true
      containers:
        - name: c
          image: i
          securityContext: {capabilities: {add: [BPF]}}
";
    let parse = |text: &str| {
        let docs = yaml_documents(text).expect("inline YAML parses");
        assert_eq!(docs.len(), 1);
        parse_object(&docs[0])
    };
    // The well-formed document passes: the checker does not reject everything.
    assert!(matches!(parse(daemonset), Ok(Object::DaemonSet(_))));

    let misspelt = daemonset
        .replace("hostNetwork", "hostNetwrok")
        .replace("capabilities", "capabilites");
    match parse(&misspelt) {
        Err(Rejected::UnknownFields(paths)) => assert_eq!(
            paths,
            [
                "spec.template.spec.containers[0].securityContext.capabilites",
                "spec.template.spec.hostNetwrok",
            ]
        ),
        other => panic!("misspelt fields were not reported: {other:?}"),
    }

    // A field in the wrong place is unknown there.
    let misplaced = daemonset.replace(
        "namespace: kube-system}",
        "namespace: kube-system, hostNetwork: true}",
    );
    match parse(&misplaced) {
        Err(Rejected::UnknownFields(paths)) => assert_eq!(paths, ["metadata.hostNetwork"]),
        other => panic!("a misplaced field was not reported: {other:?}"),
    }

    match parse(&daemonset.replace("hostNetwork: true", "hostNetwork: [yes]")) {
        Err(Rejected::Invalid { path, .. }) => assert_eq!(path, "spec.template.spec.hostNetwork"),
        other => panic!("a wrong value type was not reported: {other:?}"),
    }
    match parse(&daemonset.replace("kind: DaemonSet", "kind: DeamonSet")) {
        Err(Rejected::UnknownKind(kind)) => assert_eq!(kind, r#""apps/v1" "DeamonSet""#),
        other => panic!("an unknown kind was not reported: {other:?}"),
    }
    // A ConfigMap value must be a string (YAML's bare true is not).
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {A: true}\n";
    assert!(matches!(parse(config_map), Err(Rejected::Invalid { .. })));
}
