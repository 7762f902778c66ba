//! The Kubernetes manifests in `deploy/`, checked offline: every document of every file the
//! kustomization lists deserializes into its k8s-openapi type with no field left over, the
//! `DaemonSet` starts the agent with a command line and environment `hostgw-agent run` accepts,
//! and the probes, capabilities, volumes and RBAC agree with what the agent does. The init
//! containers' scripts run against a fake node in a temporary directory. No cluster, no root,
//! no network.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fmt, fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clap::{CommandFactory as _, Parser as _};
use hostgw_agent::cli::{Cli, Command as CliCommand, RunArgs};
use k8s_openapi::{
    Resource,
    api::{
        apps::v1::DaemonSet,
        core::v1::{
            ConfigMap, Container, Namespace, Node, NodeSpec, PodSpec, Probe, ServiceAccount, Volume,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The node name the downward API hands the pod (`spec.nodeName`) in these checks.
const NODE_NAME: &str = "node-a";
/// The agent container's capabilities: each one is justified in a `# CAP_…:` comment.
const AGENT_CAPABILITIES: &[&str] = &["BPF", "NET_ADMIN", "PERFMON"];
/// The init containers' capabilities (sysctl writes, the pods' bridge).
const INIT_CAPABILITIES: &[&str] = &["NET_ADMIN"];
/// The agent container's name in the `DaemonSet`.
const AGENT: &str = "agent";
/// The init containers and the script each runs from the `hostgw-node-init` `ConfigMap`.
const INIT_SCRIPTS: &[(&str, &str)] = &[
    ("enable-forwarding", "enable-forwarding.sh"),
    ("install-cni", "install-cni.sh"),
];
/// `hostgw-config` keys named like the agent's variables that only the init scripts read
/// (the agent gets them too, and clap ignores variables no flag names).
const INIT_ONLY_VARIABLES: &[&str] = &["HOSTGW_IPV6_FORWARDING"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Loading and strict deserialization

/// `deploy/kustomization.yaml`: only the fields this checker understands, so that a new one
/// is noticed here rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

/// A manifest document as its k8s-openapi type.
#[derive(Debug)]
enum Object {
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
struct Manifests {
    kustomization: Kustomization,
    /// Each object with where it came from (`file#document`), for messages.
    objects: Vec<(String, Object)>,
}

impl Manifests {
    fn load() -> Self {
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

    fn namespace(&self) -> &str {
        self.kustomization
            .namespace
            .as_deref()
            .expect("kustomization.yaml names the namespace")
    }

    fn daemonset(&self) -> &DaemonSet {
        let mut all = self.objects.iter().filter_map(|(_, o)| match o {
            Object::DaemonSet(ds) => Some(&**ds),
            _ => None,
        });
        let ds = all.next().expect("the manifests hold a DaemonSet");
        assert!(all.next().is_none(), "the manifests hold one DaemonSet");
        ds
    }

    fn pod(&self) -> &PodSpec {
        self.daemonset()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("the DaemonSet has a pod template")
    }

    fn agent(&self) -> &Container {
        self.pod()
            .containers
            .iter()
            .find(|c| c.name == AGENT)
            .unwrap_or_else(|| panic!("the DaemonSet has no container {AGENT:?}"))
    }

    fn init_container(&self, name: &str) -> &Container {
        self.pod()
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no init container {name:?}"))
    }

    fn all_containers(&self) -> impl Iterator<Item = &Container> {
        let pod = self.pod();
        pod.init_containers.iter().flatten().chain(&pod.containers)
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.objects
            .iter()
            .find_map(|(_, o)| match o {
                Object::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(name) => Some(cm),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the manifests hold no ConfigMap {name:?}"))
    }

    /// The `ConfigMap` that the `DaemonSet` volume named `volume` projects.
    fn volume_config_map(&self, volume: &str) -> &ConfigMap {
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
    fn script(&self, key: &str) -> &str {
        let cm = self.config_map("hostgw-node-init");
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("ConfigMap hostgw-node-init has no {key}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's command line

/// Why the `DaemonSet`'s agent command line is not one the agent accepts.
#[derive(Debug)]
enum CliRejected {
    /// The container does not run the agent binary.
    NotTheAgent(Vec<String>),
    /// A `HOSTGW_*` variable that no flag of `hostgw-agent run` reads: a typo, or a flag
    /// that is gone. The agent would start without the setting.
    UnknownVariable(String),
    /// A value the flag reading the variable refuses (clap only takes `true` or `false`).
    FlagValue { var: String, value: String },
    /// clap refused the command line.
    Clap(Box<clap::Error>),
    /// The command line parses, but to another subcommand than `run`.
    NotRun,
}

impl fmt::Display for CliRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTheAgent(command) => write!(f, "the command {command:?} is not the agent"),
            Self::UnknownVariable(var) => {
                write!(
                    f,
                    "{var} is set, but no flag of `hostgw-agent run` reads it"
                )
            }
            Self::FlagValue { var, value } => write!(f, "{var}={value:?} is not true or false"),
            Self::Clap(e) => write!(f, "hostgw-agent refuses its command line: {e}"),
            Self::NotRun => write!(f, "the command line is not `hostgw-agent run`"),
        }
    }
}

/// The environment a container starts with, as the kubelet builds it: the keys of the
/// `envFrom` `ConfigMap`s, then `env` (which wins), with `spec.nodeName` from the downward
/// API as [`NODE_NAME`].
fn container_env(container: &Container, manifests: &Manifests) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        assert!(
            source.secret_ref.is_none(),
            "{}: envFrom a Secret is not expected here",
            container.name
        );
        let reference = source
            .config_map_ref
            .as_ref()
            .unwrap_or_else(|| panic!("{}: envFrom without a ConfigMap", container.name));
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let cm = manifests.config_map(&reference.name);
        for (key, value) in cm.data.iter().flatten() {
            env.insert(format!("{prefix}{key}"), value.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    assert_eq!(
                        field.field_path, "spec.nodeName",
                        "{}: {} comes from a field these checks do not know",
                        container.name, var.name
                    );
                    NODE_NAME.to_owned()
                } else if let Some(key) = &from.config_map_key_ref {
                    manifests
                        .config_map(&key.name)
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&key.key))
                        .unwrap_or_else(|| panic!("{}: no key {}", key.name, key.key))
                        .clone()
                } else {
                    panic!(
                        "{}: {} comes from a source these checks do not know",
                        container.name, var.name
                    )
                }
            }
            _ => panic!("{}: {} has a value and a source", container.name, var.name),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// The `HOSTGW_*` variables of `env` that no flag of `hostgw-agent run` reads, those the init
/// scripts read ([`INIT_ONLY_VARIABLES`]) aside.
fn unknown_hostgw_variables(env: &BTreeMap<String, String>) -> Vec<String> {
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("hostgw-agent has a run subcommand");
    env.keys()
        .filter(|var| var.starts_with("HOSTGW_"))
        .filter(|var| !INIT_ONLY_VARIABLES.contains(&var.as_str()))
        .filter(|var| {
            !run.get_arguments()
                .any(|a| a.get_env() == Some(OsStr::new(var)))
        })
        .cloned()
        .collect()
}

/// The agent's command line as the container starts it: `command` and `args`, then each
/// variable of `env` that a flag of `hostgw-agent run` reads, as that flag, unless the
/// command line gives the flag already (clap reads a flag's variable only then). This mirrors
/// clap's reading of the environment without touching this process's.
fn agent_argv(
    container: &Container,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, CliRejected> {
    let command = container.command.clone().unwrap_or_default();
    let runs_agent = command
        .first()
        .is_some_and(|c| Path::new(c).file_name() == Some(OsStr::new("hostgw-agent")));
    if !runs_agent {
        return Err(CliRejected::NotTheAgent(command));
    }
    let mut argv: Vec<String> = command
        .into_iter()
        .chain(container.args.iter().flatten().cloned())
        .collect();
    if let Some(var) = unknown_hostgw_variables(env).into_iter().next() {
        return Err(CliRejected::UnknownVariable(var));
    }
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("hostgw-agent has a run subcommand");
    for (var, value) in env {
        let Some(arg) = run
            .get_arguments()
            .find(|a| a.get_env() == Some(OsStr::new(var)))
        else {
            continue;
        };
        let long = arg
            .get_long()
            .expect("every option of `hostgw-agent run` is a long one");
        let flag = format!("--{long}");
        if argv
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        if arg.get_action().takes_values() {
            argv.push(format!("{flag}={value}"));
        } else {
            let accepted = arg
                .get_value_parser()
                .possible_values()
                .is_some_and(|mut p| p.any(|p| p.matches(value, false)));
            if !accepted {
                return Err(CliRejected::FlagValue {
                    var: var.clone(),
                    value: value.clone(),
                });
            }
            if value == "true" {
                argv.push(flag);
            }
        }
    }
    Ok(argv)
}

/// Parses the container's command line with the agent's own clap definition.
fn agent_run_args(
    container: &Container,
    env: &BTreeMap<String, String>,
) -> Result<RunArgs, CliRejected> {
    let argv = agent_argv(container, env)?;
    let cli = Cli::try_parse_from(&argv).map_err(|e| CliRejected::Clap(Box::new(e)))?;
    #[allow(
        irrefutable_let_patterns,
        reason = "`run` is the only subcommand today; inspection subcommands are planned"
    )]
    let CliCommand::Run(args) = cli.command else {
        return Err(CliRejected::NotRun);
    };
    Ok(args)
}

/// The agent's parsed command line, or a panic that says what is wrong with it.
fn agent_args(manifests: &Manifests) -> RunArgs {
    let agent = manifests.agent();
    agent_run_args(agent, &container_env(agent, manifests)).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// The manifests themselves

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
        Err(Rejected::UnknownKind(kind)) => assert!(kind.contains("DeamonSet"), "{kind}"),
        other => panic!("an unknown kind was not reported: {other:?}"),
    }
    // A ConfigMap value must be a string (YAML's bare true is not).
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {A: true}\n";
    assert!(matches!(parse(config_map), Err(Rejected::Invalid { .. })));
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet against the agent

#[test]
fn agent_command_line_and_environment_are_ones_the_agent_accepts() {
    let manifests = Manifests::load();
    let args = agent_args(&manifests);
    assert_eq!(
        args.node_name.as_deref(),
        Some(NODE_NAME),
        "--node-name from spec.nodeName"
    );
    assert_eq!(
        args.nodes_file, None,
        "in a pod the nodes come from the Kubernetes API, not a file"
    );
    let config = hostgw_agent::Config::try_from(args)
        .unwrap_or_else(|e| panic!("the agent's configuration does not validate: {e}"));
    assert_eq!(config.node_name, NODE_NAME);

    // Every HOSTGW_* variable any container gets is one the agent reads.
    for container in manifests.all_containers() {
        let env = container_env(container, &manifests);
        let unknown = unknown_hostgw_variables(&env);
        assert!(
            unknown.is_empty(),
            "{}: no flag of `hostgw-agent run` reads {unknown:?}",
            container.name
        );
    }

    // The log filter reaches the agent, and tracing accepts it.
    let env = container_env(manifests.agent(), &manifests);
    let filter = env.get("RUST_LOG").expect("RUST_LOG reaches the agent");
    tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|e| panic!("RUST_LOG={filter:?} is not a valid filter: {e}"));

    // The ConfigMap's other keys are read by someone: RUST_LOG by the agent, the rest by the
    // init containers' scripts.
    let scripts: String = INIT_SCRIPTS
        .iter()
        .map(|(_, key)| manifests.script(key))
        .collect();
    for key in manifests
        .config_map("hostgw-config")
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
    {
        let read = key.starts_with("HOSTGW_")
            || key == "RUST_LOG"
            || scripts.contains(&format!("${{{key}")) // ${KEY or ${KEY:=...}
            || scripts.contains(&format!("${key}"));
        assert!(read, "hostgw-config sets {key}, which nothing reads");
    }

    // The variables exempt from the check above are the scripts', and the agent's flags do
    // not read them.
    let run = Cli::command();
    let run = run.find_subcommand("run").expect("a run subcommand");
    for var in INIT_ONLY_VARIABLES {
        assert!(
            scripts.contains(&format!("${{{var}")),
            "no init script reads {var}"
        );
        assert!(
            !run.get_arguments()
                .any(|a| a.get_env() == Some(OsStr::new(var))),
            "a flag of `hostgw-agent run` reads {var}: it is not the init scripts' alone"
        );
    }
}

#[test]
fn cli_check_rejects_what_the_agent_would() {
    let manifests = Manifests::load();
    let agent = manifests.agent();
    let env = container_env(agent, &manifests);
    assert!(
        agent_run_args(agent, &env).is_ok(),
        "the DaemonSet's own command line"
    );

    let mut bad_flag = agent.clone();
    bad_flag
        .args
        .get_or_insert_with(Vec::new)
        .push("--no-such-flag".to_owned());
    assert!(matches!(
        agent_run_args(&bad_flag, &env),
        Err(CliRejected::Clap(_))
    ));

    let mut typo = env.clone();
    typo.insert("HOSTGW_UPLNK".to_owned(), "eth1".to_owned());
    assert!(matches!(
        agent_run_args(agent, &typo),
        Err(CliRejected::UnknownVariable(v)) if v == "HOSTGW_UPLNK"
    ));

    let mut yes = env.clone();
    yes.insert("HOSTGW_KEEP_DATAPLANE".to_owned(), "yes".to_owned());
    assert!(matches!(
        agent_run_args(agent, &yes),
        Err(CliRejected::FlagValue { .. })
    ));

    let mut soon = env.clone();
    soon.insert("HOSTGW_RESYNC_SECONDS".to_owned(), "soon".to_owned());
    assert!(matches!(
        agent_run_args(agent, &soon),
        Err(CliRejected::Clap(_))
    ));

    // Without the uplink (the one required setting) clap refuses.
    let mut no_uplink = env.clone();
    no_uplink.remove("HOSTGW_UPLINK");
    if std::env::var_os("HOSTGW_UPLINK").is_none() {
        assert!(matches!(
            agent_run_args(agent, &no_uplink),
            Err(CliRejected::Clap(_))
        ));
    } else {
        eprintln!("skipping the missing-uplink check: HOSTGW_UPLINK is set in this environment");
    }

    // The command line wins over the environment, as in clap.
    let mut overridden = env.clone();
    overridden.insert("HOSTGW_METRICS_ADDR".to_owned(), "127.0.0.1:1".to_owned());
    let args = agent_run_args(agent, &overridden).expect("the command line wins");
    assert_eq!(args.metrics_addr, agent_args(&manifests).metrics_addr);

    let mut shell = agent.clone();
    shell.command = Some(vec!["/bin/sh".to_owned()]);
    assert!(matches!(
        agent_run_args(&shell, &env),
        Err(CliRejected::NotTheAgent(_))
    ));
}

/// The port number a probe or a port reference names, looked up in the container's ports.
fn port_number(container: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).expect("a port number"),
        IntOrString::String(name) => {
            let port = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("{}: no port named {name:?}", container.name));
            u16::try_from(port.container_port).expect("a port number")
        }
    }
}

fn check_probe(
    container: &Container,
    kind: &str,
    probe: Option<&Probe>,
    path: &str,
    addr: SocketAddr,
) {
    let probe = probe.unwrap_or_else(|| panic!("the agent has no {kind} probe"));
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("the {kind} probe is not an HTTP GET"));
    assert_eq!(get.path.as_deref(), Some(path), "the {kind} probe's path");
    assert_eq!(
        port_number(container, &get.port),
        addr.port(),
        "the {kind} probe's port is --metrics-addr's ({addr})"
    );
    assert_eq!(
        get.host, None,
        "the {kind} probe goes to the pod's (the node's) address"
    );
    assert!(
        matches!(get.scheme.as_deref(), None | Some("HTTP")),
        "the agent serves plain HTTP"
    );
}

#[test]
fn probes_and_port_are_the_agents_http_endpoint() {
    let manifests = Manifests::load();
    let agent = manifests.agent();
    let addr = agent_args(&manifests).metrics_addr;
    assert!(
        addr.ip().is_unspecified(),
        "the kubelet probes the pod's address, the node's with hostNetwork: --metrics-addr must \
         listen on every address, not {addr}"
    );
    check_probe(
        agent,
        "liveness",
        agent.liveness_probe.as_ref(),
        "/healthz",
        addr,
    );
    check_probe(
        agent,
        "readiness",
        agent.readiness_probe.as_ref(),
        "/readyz",
        addr,
    );
    if agent.startup_probe.is_some() {
        check_probe(
            agent,
            "startup",
            agent.startup_probe.as_ref(),
            "/healthz",
            addr,
        );
    }
    let declared: Vec<u16> = agent
        .ports
        .iter()
        .flatten()
        .map(|p| u16::try_from(p.container_port).expect("a port number"))
        .collect();
    assert_eq!(declared, [addr.port()], "the agent's declared ports");

    let annotations = manifests
        .daemonset()
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    if let Some(port) = annotations.and_then(|a| a.get("prometheus.io/port")) {
        assert_eq!(*port, addr.port().to_string(), "prometheus.io/port");
    }
}

/// The daemonset.yaml comment lines, for the capability justifications.
fn has_comment(text: &str, needle: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with('#') && l.contains(needle))
}

fn check_security(container: &Container, capabilities: &[&str], justifications: &str) {
    let name = &container.name;
    let sc = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has no securityContext"));
    assert_ne!(sc.privileged, Some(true), "{name} must not be privileged");
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{name}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "{name}: capabilities reach uid 0 only"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{name}: readOnlyRootFilesystem"
    );
    let caps = sc
        .capabilities
        .as_ref()
        .unwrap_or_else(|| panic!("{name} sets no capabilities"));
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{name} drops the runtime's default capabilities"
    );
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    let expected: BTreeSet<&str> = capabilities.iter().copied().collect();
    assert_eq!(added, expected, "{name}'s capabilities");
    for cap in &added {
        assert!(
            has_comment(justifications, &format!("CAP_{cap}:")),
            "{name}: CAP_{cap} is not justified in a `# CAP_{cap}:` comment"
        );
    }
}

#[test]
fn containers_get_the_justified_capabilities_not_privileged() {
    let manifests = Manifests::load();
    let text = read(&deploy_dir().join("daemonset.yaml"));
    check_security(manifests.agent(), AGENT_CAPABILITIES, &text);
    for (name, _) in INIT_SCRIPTS {
        check_security(manifests.init_container(name), INIT_CAPABILITIES, &text);
    }
    assert_eq!(
        manifests.all_containers().count(),
        INIT_SCRIPTS.len() + 1,
        "every container is checked here"
    );

    let pod = manifests.pod();
    assert_eq!(
        pod.host_network,
        Some(true),
        "the agent works in the node's network namespace"
    );
    assert_ne!(pod.host_pid, Some(true), "hostPID is not needed");
    assert_ne!(pod.host_ipc, Some(true), "hostIPC is not needed");
}

/// The `DaemonSet` volume backed by the host path `path`.
fn host_path_volume<'a>(pod: &'a PodSpec, path: &str) -> &'a Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == path))
        .unwrap_or_else(|| panic!("no hostPath volume for {path}"))
}

#[test]
fn bpffs_is_the_hosts_and_holds_the_pin_dir() {
    let manifests = Manifests::load();
    let pin_dir = agent_args(&manifests).pin_dir;
    let volume = host_path_volume(manifests.pod(), "/sys/fs/bpf");
    assert_eq!(
        volume.host_path.as_ref().and_then(|h| h.type_.as_deref()),
        Some("Directory"),
        "the host's bpffs must exist (systemd mounts it); an empty directory made for the pod \
         would not be one"
    );
    let mount = manifests
        .agent()
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("the agent mounts the host's /sys/fs/bpf");
    assert_eq!(
        Some(Path::new(&mount.mount_path)),
        pin_dir.parent(),
        "the host's bpffs is mounted at --pin-dir's parent ({})",
        pin_dir.display()
    );
    assert_ne!(mount.read_only, Some(true), "the agent pins below it");
    assert_ne!(
        mount.mount_propagation.as_deref(),
        Some("Bidirectional"),
        "Bidirectional propagation requires a privileged container"
    );
    assert!(
        !pin_dir.starts_with("/sys/") && !pin_dir.starts_with("/proc/"),
        "the runtime's default AppArmor profile denies writes below /sys/fs/bpf and /proc/sys: \
         mount the host's paths elsewhere"
    );
}

#[test]
fn rbac_reads_nodes_only_and_binds_the_daemonsets_account() {
    let manifests = Manifests::load();
    let mut roles = manifests.objects.iter().filter_map(|(_, o)| match o {
        Object::ClusterRole(r) => Some(r),
        _ => None,
    });
    let role = roles.next().expect("a ClusterRole");
    assert!(roles.next().is_none(), "one ClusterRole");
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "one rule: nodes");
    let rule = &rules[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&[String::new()][..]),
        "the core API group"
    );
    assert_eq!(rule.resources.as_deref(), Some(&["nodes".to_owned()][..]));
    let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "read-only");
    assert_eq!(rule.resource_names, None);
    assert_eq!(rule.non_resource_urls, None);

    let account = manifests
        .pod()
        .service_account_name
        .as_deref()
        .expect("the DaemonSet names its ServiceAccount");
    assert!(
        manifests
            .objects
            .iter()
            .any(|(_, o)| matches!(o, Object::ServiceAccount(sa)
            if sa.metadata.name.as_deref() == Some(account))),
        "ServiceAccount {account} is in the manifests"
    );
    let binding = manifests
        .objects
        .iter()
        .find_map(|(_, o)| match o {
            Object::ClusterRoleBinding(b) => Some(b),
            _ => None,
        })
        .expect("a ClusterRoleBinding");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "the binding's one subject");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, account);
    assert_eq!(
        subjects[0].namespace.as_deref(),
        Some(manifests.namespace())
    );
}

#[test]
fn daemonset_runs_everywhere_within_its_resources() {
    let manifests = Manifests::load();
    let ds = manifests.daemonset();
    let spec = ds.spec.as_ref().expect("a spec");
    let selector = spec.selector.match_labels.as_ref().expect("matchLabels");
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("template labels");
    for (k, v) in selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the selector matches the pod template ({k})"
        );
    }

    let pod = manifests.pod();
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "a toleration of every taint: every node routes"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );

    for container in manifests.all_containers() {
        let resources = container
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no resources", container.name));
        for (kind, quantities) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for resource in ["cpu", "memory"] {
                assert!(
                    quantities
                        .as_ref()
                        .is_some_and(|q| q.contains_key(resource)),
                    "{}: no {resource} in {kind}",
                    container.name
                );
            }
        }
    }

    // Volumes and ConfigMaps that containers name exist.
    let volumes: BTreeSet<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for container in manifests.all_containers() {
        for mount in container.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(mount.name.as_str()),
                "{} mounts the missing volume {}",
                container.name,
                mount.name
            );
        }
    }
}

#[test]
fn images_agree_with_the_kustomization_and_the_dockerfile() {
    let manifests = Manifests::load();
    let images: BTreeSet<&str> = manifests
        .all_containers()
        .map(|c| c.image.as_deref().expect("an image"))
        .collect();
    assert_eq!(
        images.len(),
        1,
        "every container runs the agent's image: {images:?}"
    );
    let image = images.first().copied().expect("one image");
    let (repository, tag) = image.rsplit_once(':').expect("the image has a tag");
    for entry in &manifests.kustomization.images {
        assert_eq!(
            entry.name, repository,
            "kustomization.yaml images[] applies to the image"
        );
        assert_eq!(
            entry.new_name, None,
            "the base keeps the name; overlays rename"
        );
        assert_eq!(
            entry.new_tag.as_deref(),
            Some(tag),
            "the base's tag is the DaemonSet's"
        );
    }

    let dockerfile = read(&deploy_dir().join("Dockerfile"));
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    assert!(stages[0].ends_with(" AS builder"), "the first stage builds");
    for step in ["cargo xtask build-ebpf", "cargo build --release"] {
        assert!(dockerfile.contains(step), "the builder runs `{step}`");
    }
    let binary = &manifests.agent().command.as_ref().expect("a command")[0];
    assert!(
        dockerfile.contains(&format!("COPY --from=builder /out/hostgw-agent {binary}\n")),
        "the image holds the agent at {binary}, where the DaemonSet runs it"
    );
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"{binary}\"]")));
    // The init scripts' tools are in the image.
    let install = dockerfile
        .lines()
        .find(|l| l.contains("apt-get install"))
        .expect("the runtime stage installs packages");
    for (tool, package) in [("curl ", "curl"), ("ip ", "iproute2")] {
        assert!(manifests.script("install-cni.sh").contains(tool));
        assert!(
            install.contains(package),
            "the image lacks {package} for install-cni"
        );
    }
    let ignore = read(&deploy_dir().join("Dockerfile.dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
}

// ---------------------------------------------------------------------------------------------
// The init containers' scripts, on a fake node

/// The default a script gives a variable (`: "${VAR:=default}"`).
fn script_default<'a>(script: &'a str, var: &str) -> &'a str {
    let start = format!("${{{var}:=");
    let at = script
        .find(&start)
        .unwrap_or_else(|| panic!("the script gives {var} no default"))
        + start.len();
    let len = script[at..].find('}').expect("a closing brace");
    &script[at..at + len]
}

#[test]
fn scripts_use_the_paths_the_daemonset_mounts() {
    let manifests = Manifests::load();
    for (container, key) in INIT_SCRIPTS {
        let container = manifests.init_container(container);
        let script_volume = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| {
                container
                    .command
                    .iter()
                    .flatten()
                    .any(|c| Path::new(c) == Path::new(&m.mount_path).join(key))
            })
            .unwrap_or_else(|| panic!("{} does not run {key} from a mount", container.name));
        let cm = manifests.volume_config_map(&script_volume.name);
        assert_eq!(cm.metadata.name.as_deref(), Some("hostgw-node-init"));
    }

    let pod = manifests.pod();
    for (container, var, host_path) in [
        ("enable-forwarding", "PROC_SYS_NET", "/proc/sys/net"),
        ("install-cni", "CNI_NET_DIR", "/etc/cni/net.d"),
        ("install-cni", "CNI_BIN_DIR", "/opt/cni/bin"),
    ] {
        let key = INIT_SCRIPTS
            .iter()
            .find(|(c, _)| *c == container)
            .expect("a script")
            .1;
        let default = script_default(manifests.script(key), var);
        let volume = host_path_volume(pod, host_path);
        let mount = manifests
            .init_container(container)
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap_or_else(|| panic!("{container} does not mount {host_path}"));
        assert_eq!(
            default, mount.mount_path,
            "{key}: {var} is where {host_path} is mounted"
        );
    }
}

/// A node in a temporary directory: CNI directories, the uplink in a fake sysfs, a service
/// account, a `/proc/sys/net`, and fake `curl` and `ip` that log their arguments (`ip` fails
/// on arguments that contain `$FAKE_IP_FAIL`). Removed on drop.
struct FakeNode {
    root: PathBuf,
}

impl FakeNode {
    fn new(test: &str, uplink: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("hostgw-manifests-{test}-{}", std::process::id()));
        let _ignored = fs::remove_dir_all(&root);
        let node = Self { root };
        for dir in ["bin", "net.d", "cni-bin", "sa", "proc-sys-net/ipv4"] {
            fs::create_dir_all(node.path(dir)).expect("creating the fake node");
        }
        node.write(&format!("sys/{uplink}/mtu"), "9000\n");
        node.write("sa/token", "the-token\n");
        node.write("sa/ca.crt", "the-ca\n");
        node.write("proc-sys-net/ipv4/ip_forward", "0\n");
        for plugin in ["bridge", "host-local", "portmap"] {
            node.executable(&format!("cni-bin/{plugin}"), "#!/bin/sh\nexit 0\n");
        }
        node.executable(
            "bin/curl",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$FAKE_LOG.curl\"\n\
             if [ -n \"${FAKE_CURL_FAIL:-}\" ]; then echo 'curl: (22) 403' >&2; exit 22; fi\n\
             cat \"$FAKE_NODE\"\n",
        );
        node.executable(
            "bin/ip",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$FAKE_LOG.ip\"\n\
             case \"$*\" in\n\
             '-4 -o addr show dev '*) cat \"$FAKE_IP_ADDRS\" 2>/dev/null ;;\n\
             '-6 -o addr show dev '*) cat \"$FAKE_IP6_ADDRS\" 2>/dev/null ;;\n\
             *\"${FAKE_IP_FAIL:-no such arguments}\"*)\n\
               echo 'RTNETLINK answers: Permission denied' >&2; exit 2 ;;\n\
             esac\n\
             exit 0\n",
        );
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("creating a directory");
        fs::write(&path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    fn executable(&self, rel: &str, content: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        self.write(rel, content);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The Node object the API server returns for a node with one pod CIDR (or none).
    fn serve_node(&self, pod_cidr: Option<&str>) {
        self.serve_node_spec(pod_cidr, pod_cidr.as_slice());
    }

    /// The Node object of a node with these pod CIDRs, `spec.podCIDR` being the first, as
    /// the API server keeps them.
    fn serve_node_cidrs(&self, pod_cidrs: &[&str]) {
        self.serve_node_spec(pod_cidrs.first().copied(), pod_cidrs);
    }

    /// The Node object the API server returns, pretty-printed as it does for curl, with an
    /// annotation that mentions other pod CIDRs in an escaped string. No `spec.podCIDRs`
    /// when `pod_cidrs` is empty.
    fn serve_node_spec(&self, pod_cidr: Option<&str>, pod_cidrs: &[&str]) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(NODE_NAME.to_owned()),
                annotations: Some(BTreeMap::from([(
                    "example.com/last-applied".to_owned(),
                    r#"{"spec":{"podCIDR":"192.0.2.0/24","podCIDRs":["192.0.2.0/24","2001:db8::/64"]}}"#
                        .to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_owned),
                pod_cidrs: (!pod_cidrs.is_empty())
                    .then(|| pod_cidrs.iter().map(|&c| c.to_owned()).collect()),
                ..NodeSpec::default()
            }),
            status: None,
        };
        let json = serde_json::to_string_pretty(&node).expect("a Node serializes");
        self.write("node.json", &json);
    }

    /// Runs `script` with the container's environment, the service variables the kubelet
    /// adds, and the node's directories in place of the mounted ones.
    fn run(&self, script: &str, env: &BTreeMap<String, String>) -> Output {
        self.write("script.sh", script);
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
        );
        let out = Command::new("sh")
            .arg(self.path("script.sh"))
            .env_clear()
            .envs(env)
            .env("PATH", path)
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env("CNI_NET_DIR", self.path("net.d"))
            .env("CNI_BIN_DIR", self.path("cni-bin"))
            .env("SYS_CLASS_NET", self.path("sys"))
            .env("SA_DIR", self.path("sa"))
            .env("PROC_SYS_NET", self.path("proc-sys-net"))
            .env("FAKE_LOG", self.path("log"))
            .env("FAKE_NODE", self.path("node.json"))
            .env("FAKE_IP_ADDRS", self.path("ip-addrs"))
            .env("FAKE_IP6_ADDRS", self.path("ip6-addrs"))
            .output()
            .expect("running sh");
        fs::remove_file(self.path("script.sh")).expect("removing the script");
        out
    }

    /// A host with IPv6: `net.ipv6.conf` with forwarding off, and `accept_ra` on each of
    /// `interfaces`.
    fn with_ipv6(&self, interfaces: &[(&str, &str)]) {
        self.write("proc-sys-net/ipv6/conf/all/forwarding", "0\n");
        self.write("proc-sys-net/ipv6/conf/all/disable_ipv6", "0\n");
        for (name, accept_ra) in interfaces {
            self.write(
                &format!("proc-sys-net/ipv6/conf/{name}/accept_ra"),
                &format!("{accept_ra}\n"),
            );
        }
    }

    /// A file of the fake node, without its trailing newline.
    fn read(&self, rel: &str) -> String {
        read(&self.path(rel)).trim_end().to_owned()
    }

    /// The lines a fake tool logged, and a fresh log.
    fn take_log(&self, tool: &str) -> Vec<String> {
        let path = self.path(&format!("log.{tool}"));
        let log = fs::read_to_string(&path).unwrap_or_default();
        let _ignored = fs::remove_file(&path);
        log.lines().map(str::to_owned).collect()
    }

    fn files(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(rel))
            .expect("listing a fake directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let _ignored = fs::remove_dir_all(&self.root);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn enable_forwarding_turns_ip_forward_on() {
    let manifests = Manifests::load();
    let container = manifests.init_container("enable-forwarding");
    let node = FakeNode::new("forwarding", "eth0");
    let script = manifests.script("enable-forwarding.sh");
    let env = container_env(container, &manifests);
    let out = node.run(script, &env);
    assert!(
        out.status.success(),
        "enable-forwarding failed: {}",
        stderr(&out)
    );
    assert_eq!(read(&node.path("proc-sys-net/ipv4/ip_forward")).trim(), "1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("was off"));
    let again = node.run(script, &env);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("is on"));
}

#[test]
fn install_cni_writes_a_host_gw_conflist_and_creates_the_bridge() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("install-cni"), &manifests);
    let uplink = &env["HOSTGW_UPLINK"];
    let bridge = &env["HOSTGW_BRIDGE"];
    assert_eq!(env["HOSTGW_NODE_NAME"], NODE_NAME);
    let node = FakeNode::new("install", uplink);
    node.serve_node(Some("10.1.79.0/24"));
    let script = manifests.script("install-cni.sh");

    let out = node.run(script, &env);
    assert!(out.status.success(), "install-cni failed: {}", stderr(&out));
    assert_eq!(
        node.files("net.d"),
        ["10-hostgw.conflist"],
        "one file, no leftovers"
    );
    let conflist: Value =
        serde_json::from_str(&read(&node.path("net.d/10-hostgw.conflist"))).expect("JSON");
    // flannel's network name: host-local's allocations survive a switch-over.
    assert_eq!(conflist["name"], "cbr0");
    assert!(conflist["cniVersion"].is_string());
    let plugins = conflist["plugins"].as_array().expect("a plugin chain");
    let types: Vec<&str> = plugins
        .iter()
        .map(|p| p["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["bridge", "portmap"]);
    let b = &plugins[0];
    assert_eq!(b["bridge"], bridge.as_str(), "the agent's --bridge");
    assert_eq!(b["isGateway"], true);
    assert_eq!(b["isDefaultGateway"], true);
    assert_eq!(b["ipMasq"], false, "host-gw routes pod addresses unchanged");
    assert_eq!(b["hairpinMode"], true);
    assert_eq!(b["mtu"], 9000, "the uplink's MTU");
    assert_eq!(b["ipam"]["type"], "host-local");
    assert_eq!(
        b["ipam"]["ranges"],
        serde_json::json!([[{ "subnet": "10.1.79.0/24", "gateway": "10.1.79.1" }]]),
        "the node's spec.podCIDR, not the one in the annotation"
    );
    assert_eq!(
        node.take_log("curl"),
        [format!(
            "-sS --fail --max-time 10 --cacert {} -H Authorization: Bearer the-token \
             https://10.96.0.1:443/api/v1/nodes/{NODE_NAME}?pretty=false",
            node.path("sa/ca.crt").display()
        )]
    );
    assert_eq!(
        node.take_log("ip"),
        [
            format!("link add name {bridge} mtu 9000 type bridge"),
            format!("addr add 10.1.79.1/24 brd + dev {bridge}"),
            format!("link set dev {bridge} up"),
        ]
    );

    // Again, with the bridge in place: nothing to create, nothing to rewrite.
    node.write(&format!("sys/{bridge}/bridge/stp_state"), "0\n");
    node.write(
        "ip-addrs",
        &format!("7: {bridge}    inet 10.1.79.1/24 brd 10.1.79.255 scope global {bridge}\\\n"),
    );
    let again = node.run(script, &env);
    assert!(again.status.success(), "second run: {}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert_eq!(
        node.take_log("ip"),
        [
            format!("-4 -o addr show dev {bridge}"),
            format!("link set dev {bridge} up"),
        ]
    );

    // A bridge with another address: the bridge plugin would refuse it, so stop here.
    node.write(
        "ip-addrs",
        &format!("7: {bridge}    inet 10.9.9.1/24 brd 10.9.9.255 scope global {bridge}\\\n"),
    );
    fs::remove_file(node.path("net.d/10-hostgw.conflist")).expect("removing the conflist");
    let clash = node.run(script, &env);
    assert!(
        !clash.status.success(),
        "a bridge with another address was accepted"
    );
    assert!(stderr(&clash).contains("10.9.9.1/24"), "{}", stderr(&clash));
    assert!(node.files("net.d").is_empty(), "nothing written on failure");
}

#[test]
fn install_cni_leaves_other_configurations_alone_and_fails_loudly() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("install-cni"), &manifests);
    let node = FakeNode::new("skip", &env["HOSTGW_UPLINK"]);
    let script = manifests.script("install-cni.sh");

    // flannel's configuration is there: not a file written, not a link touched.
    node.write("net.d/10-flannel.conflist", "{}\n");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("10-flannel.conflist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.files("net.d"), ["10-flannel.conflist"]);
    assert!(node.take_log("ip").is_empty() && node.take_log("curl").is_empty());
    fs::remove_file(node.path("net.d/10-flannel.conflist")).expect("removing");

    // CNI_INSTALL=never.
    let mut never = env.clone();
    never.insert("CNI_INSTALL".to_owned(), "never".to_owned());
    node.serve_node(Some("10.1.79.0/24"));
    assert!(node.run(script, &never).status.success());
    assert!(node.files("net.d").is_empty());
    never.insert("CNI_INSTALL".to_owned(), "sometimes".to_owned());
    assert!(
        !node.run(script, &never).status.success(),
        "a bad CNI_INSTALL is refused"
    );

    // No pod CIDR allocated (and no patience): a failure that says why.
    let mut impatient = env.clone();
    impatient.insert("POD_CIDR_TIMEOUT".to_owned(), "0".to_owned());
    node.serve_node(None);
    let out = node.run(script, &impatient);
    assert!(
        !out.status.success(),
        "a node without a pod CIDR was accepted"
    );
    assert!(
        stderr(&out).contains("has no spec.podCIDR"),
        "{}",
        stderr(&out)
    );
    assert!(node.files("net.d").is_empty());

    // The API server refuses: said so, not mistaken for a missing CIDR.
    impatient.insert("FAKE_CURL_FAIL".to_owned(), "1".to_owned());
    let out = node.run(script, &impatient);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read node"),
        "{}",
        stderr(&out)
    );

    // A wrong uplink name is reported as such.
    let mut wrong_uplink = env.clone();
    wrong_uplink.insert("HOSTGW_UPLINK".to_owned(), "nosuch0".to_owned());
    node.serve_node(Some("10.1.79.0/24"));
    let out = node.run(script, &wrong_uplink);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no interface nosuch0"),
        "{}",
        stderr(&out)
    );
    assert!(node.files("net.d").is_empty());
    assert!(
        node.take_log("ip").is_empty(),
        "no link touched before the checks pass"
    );
}

#[test]
fn enable_forwarding_turns_ipv6_forwarding_on_and_keeps_router_advertisements() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("enable-forwarding"), &manifests);
    assert_eq!(
        env["HOSTGW_IPV6_FORWARDING"], "auto",
        "the ConfigMap's setting reaches the container"
    );
    let uplink = &env["HOSTGW_UPLINK"];
    let accept_ra = format!("proc-sys-net/ipv6/conf/{uplink}/accept_ra");
    let forwarding = "proc-sys-net/ipv6/conf/all/forwarding";
    let node = FakeNode::new("forwarding-v6", uplink);
    node.with_ipv6(&[(uplink, "1"), ("eth9", "1")]);
    let script = manifests.script("enable-forwarding.sh");

    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read(forwarding), "1");
    assert_eq!(
        node.read(&accept_ra),
        "2",
        "the uplink keeps taking router advertisements"
    );
    assert_eq!(
        node.read("proc-sys-net/ipv6/conf/eth9/accept_ra"),
        "1",
        "only the uplink's accept_ra is changed"
    );
    assert_eq!(
        stdout_lines(&out),
        [
            "enable-forwarding: net.ipv4.ip_forward was off; turned it on".to_owned(),
            format!(
                "enable-forwarding: net.ipv6.conf.{uplink}.accept_ra was 1; set it to 2, so \
                 that {uplink} keeps taking router advertisements"
            ),
            "enable-forwarding: net.ipv6.conf.all.forwarding was off; turned it on".to_owned(),
        ]
    );

    // Again: forwarding is on, and a router that forwarded already is left as it is.
    node.write(&accept_ra, "1\n");
    let again = node.run(script, &env);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        stdout_lines(&again),
        [
            "enable-forwarding: net.ipv4.ip_forward is on",
            "enable-forwarding: net.ipv6.conf.all.forwarding is on",
        ]
    );
    assert_eq!(node.read(&accept_ra), "1");

    // An uplink that takes no router advertisements (accept_ra 0) keeps it so.
    node.write(forwarding, "0\n");
    node.write(&accept_ra, "0\n");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read(forwarding), "1");
    assert_eq!(node.read(&accept_ra), "0");
    assert_eq!(
        stdout_lines(&out).last().map(String::as_str),
        Some("enable-forwarding: net.ipv6.conf.all.forwarding was off; turned it on")
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("accept_ra"),
        "{:?}",
        stdout_lines(&out)
    );

    // An uplink the host does not have: said so before forwarding is turned on.
    node.write(forwarding, "0\n");
    let mut wrong_uplink = env.clone();
    wrong_uplink.insert("HOSTGW_UPLINK".to_owned(), "nosuch0".to_owned());
    let out = node.run(script, &wrong_uplink);
    assert!(!out.status.success(), "a missing uplink was accepted");
    assert!(
        stderr(&out).contains("no interface nosuch0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.read(forwarding), "0");
}

#[test]
fn enable_forwarding_leaves_ipv6_alone_where_told_or_disabled() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("enable-forwarding"), &manifests);
    let uplink = &env["HOSTGW_UPLINK"];
    let accept_ra = format!("proc-sys-net/ipv6/conf/{uplink}/accept_ra");
    let forwarding = "proc-sys-net/ipv6/conf/all/forwarding";
    let script = manifests.script("enable-forwarding.sh");
    let node = FakeNode::new("forwarding-v6-off", uplink);
    node.with_ipv6(&[(uplink, "1")]);

    // A value other than auto or never: refused before anything is written.
    let mut bad = env.clone();
    bad.insert("HOSTGW_IPV6_FORWARDING".to_owned(), "yes".to_owned());
    let out = node.run(script, &bad);
    assert!(
        !out.status.success(),
        "HOSTGW_IPV6_FORWARDING=yes was accepted"
    );
    assert!(
        stderr(&out).contains("HOSTGW_IPV6_FORWARDING=yes: expected auto or never"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.read("proc-sys-net/ipv4/ip_forward"), "0");
    assert_eq!(node.read(forwarding), "0");

    // never: IPv4 on, IPv6 left alone.
    let mut never = env.clone();
    never.insert("HOSTGW_IPV6_FORWARDING".to_owned(), "never".to_owned());
    let out = node.run(script, &never);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read("proc-sys-net/ipv4/ip_forward"), "1");
    assert_eq!(node.read(forwarding), "0");
    assert_eq!(node.read(&accept_ra), "1");
    assert_eq!(
        stdout_lines(&out).last().map(String::as_str),
        Some(
            "enable-forwarding: HOSTGW_IPV6_FORWARDING=never: leaving \
             net.ipv6.conf.all.forwarding alone"
        )
    );

    // IPv6 disabled on the host (net.ipv6.conf.all.disable_ipv6 = 1): left alone.
    node.write("proc-sys-net/ipv6/conf/all/disable_ipv6", "1\n");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read(forwarding), "0");
    assert_eq!(node.read(&accept_ra), "1");
    assert!(
        stdout_lines(&out)
            .last()
            .is_some_and(|l| l.contains("IPv6 is disabled")),
        "{:?}",
        stdout_lines(&out)
    );

    // No IPv6 at all (ipv6.disable=1 on the kernel command line): no net.ipv6 to write.
    fs::remove_dir_all(node.path("proc-sys-net/ipv6")).expect("removing net.ipv6");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout_lines(&out)
            .last()
            .is_some_and(|l| l.contains("the host has no IPv6")),
        "{:?}",
        stdout_lines(&out)
    );
    assert!(!node.path("proc-sys-net/ipv6").exists());
}

/// The host-local ranges of the conflist install-cni wrote.
fn conflist_ranges(node: &FakeNode) -> Value {
    let conflist: Value =
        serde_json::from_str(&read(&node.path("net.d/10-hostgw.conflist"))).expect("JSON");
    conflist["plugins"][0]["ipam"]["ranges"].clone()
}

/// `ip -6 -o addr show` of a bridge with the `global` addresses and its link-local one.
fn ip6_addrs(bridge: &str, global: &[&str]) -> String {
    let line = |addr: &str, scope: &str| {
        format!(
            "7: {bridge}    inet6 {addr} scope {scope} \\       valid_lft forever preferred_lft forever\n"
        )
    };
    let mut out: String = global.iter().map(|a| line(a, "global nodad")).collect();
    out.push_str(&line("fe80::a8c1:abff:fe12:3456/64", "link"));
    out
}

#[test]
fn install_cni_gives_a_dual_stack_node_both_families() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("install-cni"), &manifests);
    let bridge = &env["HOSTGW_BRIDGE"];
    let node = FakeNode::new("dual-stack", &env["HOSTGW_UPLINK"]);
    let script = manifests.script("install-cni.sh");
    let ranges = serde_json::json!([
        [{ "subnet": "10.1.79.0/24", "gateway": "10.1.79.1" }],
        [{ "subnet": "fd00:10:1::/64", "gateway": "fd00:10:1::1" }],
    ]);
    node.serve_node_cidrs(&["10.1.79.0/24", "fd00:10:1::/64"]);

    let out = node.run(script, &env);
    assert!(out.status.success(), "install-cni failed: {}", stderr(&out));
    assert_eq!(
        conflist_ranges(&node),
        ranges,
        "one range set per family, IPv4 first"
    );
    assert_eq!(
        node.take_log("ip"),
        [
            format!("link add name {bridge} mtu 9000 type bridge"),
            format!("addr add 10.1.79.1/24 brd + dev {bridge}"),
            format!("addr add fd00:10:1::1/64 dev {bridge} nodad"),
            format!("link set dev {bridge} up"),
        ]
    );
    for line in [
        format!("created bridge {bridge} with 10.1.79.1/24 and fd00:10:1::1/64"),
        format!(
            "wrote 10-hostgw.conflist (pod CIDRs 10.1.79.0/24 and fd00:10:1::/64, bridge \
             {bridge}, MTU 9000)"
        ),
    ] {
        assert!(stderr(&out).contains(&line), "{}", stderr(&out));
    }

    // Again, with the bridge holding both addresses (and its IPv6 link-local one).
    node.write(&format!("sys/{bridge}/bridge/stp_state"), "0\n");
    node.write(
        "ip-addrs",
        &format!("7: {bridge}    inet 10.1.79.1/24 brd 10.1.79.255 scope global {bridge}\\\n"),
    );
    node.write("ip6-addrs", &ip6_addrs(bridge, &["fd00:10:1::1/64"]));
    let again = node.run(script, &env);
    assert!(again.status.success(), "second run: {}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert_eq!(
        node.take_log("ip"),
        [
            format!("-4 -o addr show dev {bridge}"),
            format!("-6 -o addr show dev {bridge}"),
            format!("link set dev {bridge} up"),
        ]
    );

    // The IPv6 gateway missing (the node got its IPv6 CIDR later): added.
    node.write("ip6-addrs", &ip6_addrs(bridge, &[]));
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        node.take_log("ip"),
        [
            format!("-4 -o addr show dev {bridge}"),
            format!("-6 -o addr show dev {bridge}"),
            format!("addr add fd00:10:1::1/64 dev {bridge} nodad"),
            format!("link set dev {bridge} up"),
        ]
    );

    // Another IPv6 address on the bridge: refused before anything is changed.
    node.write("ip6-addrs", &ip6_addrs(bridge, &["fd00:99::1/64"]));
    fs::remove_file(node.path("net.d/10-hostgw.conflist")).expect("removing the conflist");
    let clash = node.run(script, &env);
    assert!(
        !clash.status.success(),
        "a bridge with another IPv6 address was accepted"
    );
    assert!(
        stderr(&clash).contains("IPv6 address(es) fd00:99::1/64, not fd00:10:1::1/64"),
        "the link-local address is not counted: {}",
        stderr(&clash)
    );
    assert!(node.files("net.d").is_empty(), "nothing written on failure");
    assert_eq!(
        node.take_log("ip"),
        [
            format!("-4 -o addr show dev {bridge}"),
            format!("-6 -o addr show dev {bridge}"),
        ],
        "no address added to a bridge that is refused"
    );

    // The gateway and another global address: not exactly the gateway, refused as well.
    node.write(
        "ip6-addrs",
        &ip6_addrs(bridge, &["fd00:10:1::1/64", "2001:db8:7::1/64"]),
    );
    let clash = node.run(script, &env);
    assert!(
        !clash.status.success(),
        "an extra IPv6 address was accepted"
    );
    assert!(
        stderr(&clash).contains("fd00:10:1::1/64 2001:db8:7::1/64"),
        "{}",
        stderr(&clash)
    );
    assert!(node.files("net.d").is_empty(), "nothing written on failure");
    node.take_log("ip");

    // An IPv6-primary cluster lists IPv6 first: the ranges still put IPv4 first.
    node.write("ip6-addrs", &ip6_addrs(bridge, &["fd00:10:1::1/64"]));
    node.serve_node_cidrs(&["fd00:10:1::/64", "10.1.79.0/24"]);
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(conflist_ranges(&node), ranges);
}

#[test]
fn install_cni_serves_an_ipv6_only_node() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("install-cni"), &manifests);
    let bridge = &env["HOSTGW_BRIDGE"];
    let node = FakeNode::new("ipv6-only", &env["HOSTGW_UPLINK"]);
    let script = manifests.script("install-cni.sh");
    let ranges = serde_json::json!([[{ "subnet": "fd00:10:1::/64", "gateway": "fd00:10:1::1" }]]);
    node.serve_node(Some("fd00:10:1::/64"));

    let out = node.run(script, &env);
    assert!(out.status.success(), "install-cni failed: {}", stderr(&out));
    assert_eq!(conflist_ranges(&node), ranges);
    assert_eq!(
        node.take_log("ip"),
        [
            format!("link add name {bridge} mtu 9000 type bridge"),
            format!("addr add fd00:10:1::1/64 dev {bridge} nodad"),
            format!("link set dev {bridge} up"),
        ]
    );
    assert!(
        stderr(&out).contains("(pod CIDR fd00:10:1::/64, "),
        "{}",
        stderr(&out)
    );

    // Again: the bridge's IPv4 addresses are not its business.
    node.write(&format!("sys/{bridge}/bridge/stp_state"), "0\n");
    node.write("ip6-addrs", &ip6_addrs(bridge, &["fd00:10:1::1/64"]));
    let again = node.run(script, &env);
    assert!(again.status.success(), "second run: {}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert_eq!(
        node.take_log("ip"),
        [
            format!("-6 -o addr show dev {bridge}"),
            format!("link set dev {bridge} up"),
        ]
    );

    // A kernel that refuses the IPv6 address (IPv6 disabled on the bridge): said so.
    let mut refused = env.clone();
    refused.insert("FAKE_IP_FAIL".to_owned(), "nodad".to_owned());
    node.write("ip6-addrs", &ip6_addrs(bridge, &[]));
    fs::remove_file(node.path("net.d/10-hostgw.conflist")).expect("removing the conflist");
    let out = node.run(script, &refused);
    assert!(!out.status.success(), "a refused address was ignored");
    assert!(
        stderr(&out).contains(&format!(
            "cannot give {bridge} the address fd00:10:1::1/64: is IPv6 disabled on the node"
        )),
        "{}",
        stderr(&out)
    );
    assert!(node.files("net.d").is_empty(), "nothing written on failure");
    assert_eq!(
        node.take_log("ip").last(),
        Some(&format!("addr add fd00:10:1::1/64 dev {bridge} nodad"))
    );

    // Only spec.podCIDR set (no spec.podCIDRs): the same node.
    node.serve_node_spec(Some("fd00:10:1::/64"), &[]);
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(conflist_ranges(&node), ranges);
}

#[test]
fn install_cni_computes_ipv6_gateways_and_refuses_malformed_cidrs() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("install-cni"), &manifests);
    let bridge = &env["HOSTGW_BRIDGE"];
    let node = FakeNode::new("ipv6-cidrs", &env["HOSTGW_UPLINK"]);
    let script = manifests.script("install-cni.sh");

    // The first address, as ip(8) prints it, so that a rerun finds it on the bridge.
    for (cidr, gateway) in [
        ("fd00:10:1::/64", "fd00:10:1::1"),
        ("2001:db8:0:7::/64", "2001:db8:0:7::1"),
        ("fd00:10:1:2:ff00::/72", "fd00:10:1:2:ff00::1"),
        ("fd00:0:0:1:2::/96", "fd00::1:2:0:0:1"),
        ("fd00:10:1:2:3:4::/112", "fd00:10:1:2:3:4:0:1"),
        ("fd00:10:1:2:3:ab00::/120", "fd00:10:1:2:3:ab00:0:1"),
    ] {
        node.serve_node(Some(cidr));
        let out = node.run(script, &env);
        assert!(out.status.success(), "{cidr}: {}", stderr(&out));
        assert_eq!(
            conflist_ranges(&node),
            serde_json::json!([[{ "subnet": cidr, "gateway": gateway }]]),
            "{cidr}"
        );
        let prefix = cidr.split_once('/').expect("a prefix").1;
        assert_eq!(
            node.take_log("ip")[1],
            format!("addr add {gateway}/{prefix} dev {bridge} nodad"),
            "{cidr}"
        );
    }
    fs::remove_file(node.path("net.d/10-hostgw.conflist")).expect("removing the conflist");

    let between = "expected an IPv6 network between /64 and /120";
    for (cidrs, why) in [
        (&["fd00:10:1::/56"][..], between),
        (&["fd00:10:1::/124"], between),
        (&["fd00:10:1::1/64"], between),
        (&["fd00:10:1:2::1:0/112"], between),
        (&["FD00:10:1::/64"], between),
        (&["::/64"], between),
        (&["fd00:10:1:::/64"], between),
        (&["fd00:10:1:2:ff80::/72"], "has host bits set"),
        (
            &["fd00:10:1::/64", "fd00:20:1::/64"],
            "has two IPv6 pod CIDRs, fd00:10:1::/64 and fd00:20:1::/64: expected at most one \
             of each family",
        ),
        (
            &["10.1.79.0/24", "10.1.80.0/24"],
            "has two IPv4 pod CIDRs, 10.1.79.0/24 and 10.1.80.0/24",
        ),
        (&["10.1.79.0/24", "fd00:10:1::/48"], between),
    ] {
        node.serve_node_cidrs(cidrs);
        let out = node.run(script, &env);
        assert!(!out.status.success(), "{cidrs:?} was accepted");
        let message = stderr(&out);
        assert!(message.contains(why), "{cidrs:?}: {message}");
        let last = cidrs.last().expect("a CIDR");
        assert!(message.contains(last), "{cidrs:?}: {message}");
        assert!(node.files("net.d").is_empty(), "{cidrs:?}: nothing written");
        assert!(node.take_log("ip").is_empty(), "{cidrs:?}: no link touched");
    }
}
