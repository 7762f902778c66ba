//! The node source for a cluster: a reflector over the Kubernetes API's `Node` objects.
//!
//! It publishes the full node list (the same shape as the file source, so the same desired
//! state code runs on it) after the first complete list and after every change. The kube
//! runtime relists after `410 Gone` and after watch errors, with backoff; while the API server
//! is unreachable nothing is published and the dataplane stays exactly as it is. Objects are
//! stored without `managedFields`, which are most of a Node's size and never read here.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use tokio::sync::watch;

use super::{
    Nodes,
    nodes::{Item, NodeInfo},
};

/// Why the Kubernetes client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Not in a pod, or the service account is not mounted.
    #[error("in-cluster configuration (no --nodes-file or --kubeconfig given)")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be built from the configuration.
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client from `--kubeconfig`, or from the pod's service account.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::incluster().map_err(KubeError::InCluster)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// Starts watching the cluster's nodes.
pub fn watch_nodes(client: Client, annotation_prefix: String) -> Nodes {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(client, annotation_prefix, tx));
    rx
}

async fn run(client: Client, prefix: String, tx: watch::Sender<Option<Arc<Vec<Item>>>>) {
    let api: Api<Node> = Api::all(client);
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .modify(|node| node.managed_fields_mut().clear())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut listed = false;
    let mut relisting = false;
    let mut last: Option<Vec<Item>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                relisting = true;
                continue;
            }
            Ok(watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::InitDone) => {
                relisting = false;
                if !listed {
                    tracing::info!(nodes = reader.state().len(), "first full node list");
                }
                listed = true;
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "watching nodes failed; retrying (the dataplane stays as it is)");
                continue;
            }
        }
        if !listed || relisting {
            continue;
        }
        let mut items: Vec<Item> = reader
            .state()
            .iter()
            .map(|node| Item::Node(NodeInfo::from_node(node, &prefix)))
            .collect();
        items.sort_by(|a, b| name(a).cmp(name(b)));
        if last.as_ref() != Some(&items) {
            last = Some(items.clone());
            if tx.send(Some(Arc::new(items))).is_err() {
                return;
            }
        }
    }
}

fn name(item: &Item) -> &str {
    match item {
        Item::Node(n) => &n.name,
        Item::Malformed { name, .. } => name,
    }
}
