//! Node objects: reading a v1 `NodeList` file (YAML or JSON, as `kubectl get nodes -o yaml`
//! prints it) and reducing each `Node` to the fields host-gw uses.
//!
//! A file that cannot be read as a list is an error (the caller keeps its last good state); an
//! item of the list that is not a valid `Node` is returned as [`Item::Malformed`], so one bad
//! node is skipped and reported while the others keep working. Nothing here judges the values
//! (CIDRs, addresses): that is [`crate::reconcile::desired`]'s job.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Node;

use crate::model::Family;

/// What host-gw needs from a `Node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.podCIDRs`, else `spec.podCIDR`, as written.
    pub pod_cidrs: Vec<String>,
    /// `status.addresses` of type `InternalIP`, as written.
    pub internal_ips: Vec<String>,
}

/// flannel's default annotation prefix.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";

impl NodeInfo {
    /// The host-gw view of a Kubernetes `Node`. As in flannel, the annotation
    /// `<prefix>/public-ip-overwrite`, else `<prefix>/public-ip`, replaces the IPv4
    /// `InternalIP`s, and `<prefix>/public-ipv6-overwrite`, else `<prefix>/public-ipv6`, the
    /// IPv6 ones; the other family's addresses are kept.
    pub fn from_node(node: &Node, annotation_prefix: &str) -> Self {
        let spec = node.spec.as_ref();
        let pod_cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        let annotation = |key: &str| {
            node.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&format!("{annotation_prefix}/{key}")))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let internal: Vec<String> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|addrs| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut internal_ips = Vec::new();
        for (family, public) in [
            (
                Family::V4,
                annotation("public-ip-overwrite").or_else(|| annotation("public-ip")),
            ),
            (
                Family::V6,
                annotation("public-ipv6-overwrite").or_else(|| annotation("public-ipv6")),
            ),
        ] {
            match public {
                Some(ip) => internal_ips.push(ip),
                None => internal_ips.extend(
                    internal
                        .iter()
                        .filter(|a| Family::of_text(a) == family)
                        .cloned(),
                ),
            }
        }
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidrs,
            internal_ips,
        }
    }
}

/// One item of a node list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A valid `Node`.
    Node(NodeInfo),
    /// An item that does not deserialize as a `Node`: its name (or `items[i]` when it has
    /// none) and what is wrong.
    Malformed { name: String, error: String },
}

/// Why a nodes file could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum NodesFileError {
    /// The file could not be read.
    #[error("cannot read nodes file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON.
    #[error("nodes file {path}: line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The document is not a v1 node list.
    #[error("nodes file {path}: field `{field}`: {message}")]
    Shape {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// Reads and parses a nodes file.
pub fn read_file(path: &Path, annotation_prefix: &str) -> Result<Vec<Item>, NodesFileError> {
    parse_bytes(path, &read_bytes(path)?, annotation_prefix)
}

/// The content of a nodes file, as read.
pub fn read_bytes(path: &Path) -> Result<Bytes, NodesFileError> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|source| NodesFileError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses the content of a nodes file (UTF-8); `path` only names it in errors.
pub fn parse_bytes(
    path: &Path,
    content: &[u8],
    annotation_prefix: &str,
) -> Result<Vec<Item>, NodesFileError> {
    let text = std::str::from_utf8(content).map_err(|e| NodesFileError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    parse(path, text, annotation_prefix)
}

/// Parses the text of a nodes file; `path` only names it in errors.
pub fn parse(
    path: &Path,
    text: &str,
    annotation_prefix: &str,
) -> Result<Vec<Item>, NodesFileError> {
    let doc = to_json(path, text)?;
    let shape = |field, message: String| NodesFileError::Shape {
        path: path.to_path_buf(),
        field,
        message,
    };
    match doc.get("apiVersion").and_then(|v| v.as_str()) {
        Some("v1") => {}
        other => {
            return Err(shape(
                "apiVersion",
                format!("expected \"v1\", found {other:?}"),
            ));
        }
    }
    match doc.get("kind").and_then(|v| v.as_str()) {
        Some("List" | "NodeList") => {}
        other => {
            return Err(shape(
                "kind",
                format!("expected \"List\" or \"NodeList\", found {other:?}"),
            ));
        }
    }
    let items = match doc.get("items") {
        Some(serde_json::Value::Array(items)) => items,
        Some(serde_json::Value::Null) | None => return Ok(Vec::new()),
        Some(other) => return Err(shape("items", format!("expected a list, found {other}"))),
    };
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, v)| item(i, v, annotation_prefix))
        .collect())
}

fn item(index: usize, value: &serde_json::Value, annotation_prefix: &str) -> Item {
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .map_or_else(|| format!("items[{index}]"), str::to_owned);
    if value.get("kind").and_then(|k| k.as_str()) != Some("Node") {
        return Item::Malformed {
            name,
            error: format!("`kind` is {:?}, not \"Node\"", value.get("kind")),
        };
    }
    match serde_path_to_error::deserialize::<_, Node>(value) {
        Ok(node) if node.metadata.name.as_deref().is_some_and(|n| !n.is_empty()) => {
            Item::Node(NodeInfo::from_node(&node, annotation_prefix))
        }
        Ok(_) => Item::Malformed {
            name,
            error: "`metadata.name` is missing or empty".to_owned(),
        },
        Err(e) => Item::Malformed {
            name,
            error: format!("`{}`: {}", e.path(), e.inner()),
        },
    }
}

/// The document as a JSON value: JSON files directly, YAML through the YAML parser, both with
/// the position of a syntax error.
fn to_json(path: &Path, text: &str) -> Result<serde_json::Value, NodesFileError> {
    let syntax = |line, column, message| NodesFileError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| syntax(e.line(), e.column(), e.to_string()));
    }
    // Straight into a JSON value: no intermediate YAML tree to build, convert and free.
    serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        syntax(line, column, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_YAML: &str = r#"apiVersion: v1
items:
- apiVersion: v1
  kind: Node
  metadata:
    labels:
      kubernetes.io/hostname: node-a
    name: node-a
    resourceVersion: "1234"
  spec:
    podCIDR: 10.1.79.0/24
    podCIDRs:
    - 10.1.79.0/24
    - fd00:10:1:79::/64
  status:
    addresses:
    - address: 172.20.11.43
      type: InternalIP
    - address: node-a
      type: Hostname
- apiVersion: v1
  kind: Node
  metadata:
    name: node-b
  spec:
    podCIDR: 10.1.27.0/24
  status:
    addresses:
    - address: 172.20.11.42
      type: InternalIP
kind: List
metadata:
  resourceVersion: ""
"#;

    fn p(text: &str) -> Result<Vec<Item>, NodesFileError> {
        parse(Path::new("nodes.yaml"), text, DEFAULT_ANNOTATION_PREFIX)
    }

    #[test]
    fn flannel_public_ip_annotations_override_the_internal_ip() {
        let node = |annotations: &str| {
            format!(
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: a\n    annotations: {{{annotations}}}\n  spec: {{podCIDR: 10.1.1.0/24}}\n  status: {{addresses: [{{type: InternalIP, address: 172.20.11.11}}]}}\n"
            )
        };
        let ips = |text: &str, prefix: &str| match &parse(Path::new("n"), text, prefix).unwrap()[0]
        {
            Item::Node(n) => n.internal_ips.clone(),
            other @ Item::Malformed { .. } => panic!("{other:?}"),
        };
        assert_eq!(
            ips(&node(""), DEFAULT_ANNOTATION_PREFIX),
            vec!["172.20.11.11"]
        );
        let public = node("flannel.alpha.coreos.com/public-ip: 192.0.2.5");
        assert_eq!(ips(&public, DEFAULT_ANNOTATION_PREFIX), vec!["192.0.2.5"]);
        let both = node(
            "flannel.alpha.coreos.com/public-ip: 192.0.2.5, flannel.alpha.coreos.com/public-ip-overwrite: 192.0.2.9",
        );
        assert_eq!(ips(&both, DEFAULT_ANNOTATION_PREFIX), vec!["192.0.2.9"]);
        // Another prefix ignores flannel's annotations and reads its own.
        assert_eq!(ips(&both, "example.com"), vec!["172.20.11.11"]);
        let own = node("example.com/public-ip: 192.0.2.7");
        assert_eq!(ips(&own, "example.com"), vec!["192.0.2.7"]);
    }

    #[test]
    fn public_ipv6_annotations_replace_only_the_ipv6_internal_ips() {
        let node = |annotations: &str| {
            format!(
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: a\n    annotations: {{{annotations}}}\n  spec: {{podCIDRs: [10.1.1.0/24, 'fd00:10:1::/64']}}\n  status: {{addresses: [{{type: InternalIP, address: 172.20.11.11}}, {{type: InternalIP, address: 'fd00:20::11'}}]}}\n"
            )
        };
        let ips = |text: &str| match &p(text).unwrap()[0] {
            Item::Node(n) => n.internal_ips.clone(),
            other @ Item::Malformed { .. } => panic!("{other:?}"),
        };
        assert_eq!(ips(&node("")), vec!["172.20.11.11", "fd00:20::11"]);
        // public-ip keeps the IPv6 InternalIP; public-ipv6 keeps the IPv4 one.
        assert_eq!(
            ips(&node("flannel.alpha.coreos.com/public-ip: 192.0.2.5")),
            vec!["192.0.2.5", "fd00:20::11"]
        );
        assert_eq!(
            ips(&node("flannel.alpha.coreos.com/public-ipv6: 'fd00:20::99'")),
            vec!["172.20.11.11", "fd00:20::99"]
        );
        let all = node(
            "flannel.alpha.coreos.com/public-ip: 192.0.2.5, \
             flannel.alpha.coreos.com/public-ipv6: 'fd00:20::99', \
             flannel.alpha.coreos.com/public-ipv6-overwrite: 'fd00:20::77'",
        );
        assert_eq!(ips(&all), vec!["192.0.2.5", "fd00:20::77"]);
    }

    #[test]
    fn reads_kubectl_output() {
        let items = p(KUBECTL_YAML).expect("parses");
        assert_eq!(
            items,
            vec![
                Item::Node(NodeInfo {
                    name: "node-a".into(),
                    pod_cidrs: vec!["10.1.79.0/24".into(), "fd00:10:1:79::/64".into()],
                    internal_ips: vec!["172.20.11.43".into()],
                }),
                Item::Node(NodeInfo {
                    name: "node-b".into(),
                    pod_cidrs: vec!["10.1.27.0/24".into()],
                    internal_ips: vec!["172.20.11.42".into()],
                }),
            ]
        );
    }

    #[test]
    fn reads_json_nodelist() {
        let json = r#"{"apiVersion":"v1","kind":"NodeList","items":[{"apiVersion":"v1",
            "kind":"Node","metadata":{"name":"n1"},"spec":{"podCIDR":"10.1.1.0/24"},
            "status":{"addresses":[{"type":"InternalIP","address":"172.20.11.11"}]}}]}"#;
        let items = p(json).expect("parses");
        assert_eq!(
            items,
            vec![Item::Node(NodeInfo {
                name: "n1".into(),
                pod_cidrs: vec!["10.1.1.0/24".into()],
                internal_ips: vec!["172.20.11.11".into()],
            })]
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = p("apiVersion: v1\nkind: List\nitems:\n- {\n").unwrap_err();
        let NodesFileError::Syntax { line, .. } = &e else {
            panic!("not a syntax error: {e}");
        };
        assert!(*line >= 4, "line {line}: {e}");
        assert!(
            e.to_string().starts_with("nodes file nodes.yaml: line"),
            "{e}"
        );

        let e = p("{\"apiVersion\": \"v1\",\n \"kind\": }").unwrap_err();
        assert!(matches!(e, NodesFileError::Syntax { line: 2, .. }), "{e}");

        // YAML that JSON cannot hold (a mapping as a key) is refused where it is.
        let e = p("apiVersion: v1\nkind: List\nitems:\n- ? {a: 1}\n  : b\n").unwrap_err();
        let NodesFileError::Syntax { line, .. } = &e else {
            panic!("not a syntax error: {e}");
        };
        assert!(*line >= 4, "line {line}: {e}");
    }

    #[test]
    fn yaml_scalars_keep_their_json_types() {
        let items = p(
            "apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n\
                       - apiVersion: v1\n  kind: Node\n  metadata:\n    name: n1\n    \
                       generation: 3\n  spec:\n    unschedulable: true\n    podCIDR: \
                       10.1.1.0/24\n",
        )
        .unwrap();
        assert_eq!(
            items,
            vec![Item::Node(NodeInfo {
                name: "n1".into(),
                pod_cidrs: vec!["10.1.1.0/24".into()],
                internal_ips: vec![],
            })]
        );
    }

    #[test]
    fn wrong_shape_names_the_field() {
        let e = p("apiVersion: v1\nkind: Pod\n").unwrap_err();
        assert!(e.to_string().contains("field `kind`"), "{e}");
        let e = p("apiVersion: v2\nkind: List\n").unwrap_err();
        assert!(e.to_string().contains("field `apiVersion`"), "{e}");
        let e = p("apiVersion: v1\nkind: List\nitems: 3\n").unwrap_err();
        assert!(e.to_string().contains("field `items`"), "{e}");
        assert_eq!(
            p("apiVersion: v1\nkind: List\nitems: []\n").unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_malformed_item_is_reported_and_the_rest_kept() {
        let text = r"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: good}
  spec: {podCIDR: 10.1.1.0/24}
- apiVersion: v1
  kind: Node
  metadata: {name: bad}
  spec: {podCIDRs: 10.1.2.0/24}
- apiVersion: v1
  kind: Node
  metadata: {}
- kind: Pod
  metadata: {name: notanode}
";
        let items = p(text).expect("the list parses");
        assert_eq!(items.len(), 4);
        assert!(matches!(&items[0], Item::Node(n) if n.name == "good"));
        let Item::Malformed { name, error } = &items[1] else {
            panic!("bad node accepted: {:?}", items[1]);
        };
        assert_eq!(name, "bad");
        assert!(error.contains("spec.podCIDRs"), "{error}");
        assert!(
            matches!(&items[2], Item::Malformed { name, error } if name == "items[2]" && error.contains("metadata.name")),
            "{:?}",
            items[2]
        );
        assert!(
            matches!(&items[3], Item::Malformed { name, .. } if name == "notanode"),
            "{:?}",
            items[3]
        );
    }
}
