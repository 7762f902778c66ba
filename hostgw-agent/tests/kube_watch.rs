//! The Kubernetes node source against a local HTTP server that speaks the API's list/watch
//! protocol over a real socket (list with `resourceVersion`; a watch stream of `ADDED`,
//! `MODIFIED`, `DELETED` and `BOOKMARK` events; `410 Gone` forcing a relist; connections
//! dropped mid-stream), with the unmodified kube client talking to it.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    routing::get,
};
use futures::StreamExt as _;
use hostgw_agent::{
    desired::{self, Local, SkipReason},
    nodes::{DEFAULT_ANNOTATION_PREFIX, Item, NodeInfo},
    source::{Nodes, kube as kube_source},
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The fake API server's state.
#[derive(Default)]
struct World {
    nodes: BTreeMap<String, Value>,
    rv: u64,
    /// Every change with its resource version, for watches that resume from an older one.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from an older resource version get `410 Gone`.
    oldest: u64,
    lists: usize,
    watches: usize,
}

#[derive(Clone)]
struct Api {
    world: Arc<Mutex<World>>,
    /// Live events for open watches; `None` closes every open watch.
    live: broadcast::Sender<Option<String>>,
    stop: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

fn node(name: &str, cidr: Option<&str>, ip: &str) -> Value {
    let mut spec = json!({});
    if let Some(c) = cidr {
        spec = json!({ "podCIDR": c, "podCIDRs": [c] });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "managedFields": [{ "manager": "kubelet", "operation": "Update", "apiVersion": "v1" }],
        },
        "spec": spec,
        "status": { "addresses": [{ "type": "InternalIP", "address": ip }] },
    })
}

impl Api {
    fn change(&self, kind: &'static str, mut obj: Value) {
        let line = {
            let mut w = self.world.lock().unwrap();
            w.rv += 1;
            let rv = w.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
            if kind == "DELETED" {
                w.nodes.remove(&name);
            } else {
                w.nodes.insert(name, obj.clone());
            }
            w.history.push((rv, kind, obj.clone()));
            event_line(kind, &obj)
        };
        let _none_listening = self.live.send(Some(line));
    }

    fn apply(&self, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let exists = self.world.lock().unwrap().nodes.contains_key(&name);
        self.change(if exists { "MODIFIED" } else { "ADDED" }, obj);
    }

    fn delete(&self, name: &str) {
        let obj = self.world.lock().unwrap().nodes[name].clone();
        self.change("DELETED", obj);
    }

    fn bookmark(&self) {
        let rv = self.world.lock().unwrap().rv;
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"resourceVersion": rv.to_string()}});
        let _none_listening = self.live.send(Some(event_line("BOOKMARK", &obj)));
    }

    /// Closes every open watch connection mid-stream.
    fn drop_watches(&self) {
        let _none_listening = self.live.send(None);
    }

    /// Deletes a node while no watch can see it: no event is sent or kept, and the history
    /// is forgotten, so a watch resuming from any earlier version gets 410 Gone.
    fn delete_unseen(&self, name: &str) {
        let mut w = self.world.lock().unwrap();
        w.rv += 1;
        w.nodes.remove(name);
        w.history.clear();
        w.oldest = w.rv;
    }

    /// Stops the server: open watches end and new connections are refused.
    fn shut_down(&self) {
        self.drop_watches();
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _gone = stop.send(());
        }
    }

    fn counts(&self) -> (usize, usize) {
        let w = self.world.lock().unwrap();
        (w.lists, w.watches)
    }
}

fn event_line(kind: &str, obj: &Value) -> String {
    format!("{}\n", json!({ "type": kind, "object": obj }))
}

async fn nodes(
    State(api): State<Api>,
    Query(q): Query<BTreeMap<String, String>>,
) -> axum::response::Response {
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let mut w = api.world.lock().unwrap();
        w.lists += 1;
        let list = json!({
            "apiVersion": "v1",
            "kind": "NodeList",
            "metadata": { "resourceVersion": w.rv.to_string() },
            "items": w.nodes.values().cloned().collect::<Vec<_>>(),
        });
        return axum::response::Response::new(Body::from(list.to_string()));
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (backlog, live) = {
        let mut w = api.world.lock().unwrap();
        w.watches += 1;
        if from < w.oldest {
            let gone = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status",
                "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {from} ({})", w.oldest)}});
            return axum::response::Response::new(Body::from(format!("{gone}\n")));
        }
        let backlog: Vec<String> = w
            .history
            .iter()
            .filter(|(rv, _, _)| *rv > from)
            .map(|(_, kind, obj)| event_line(kind, obj))
            .collect();
        (backlog, api.live.subscribe())
    };
    let live = futures::stream::unfold(live, |mut rx| async move {
        match rx.recv().await {
            Ok(Some(line)) => Some((line, rx)),
            _ => None,
        }
    });
    let body = futures::stream::iter(backlog)
        .chain(live)
        .map(|line| Ok::<_, Infallible>(Bytes::from(line)));
    axum::response::Response::new(Body::from_stream(body))
}

/// Starts the fake API server; returns it and a kube client pointed at it.
async fn start(initial: Vec<Value>) -> (Api, kube::Client) {
    let (live, _) = broadcast::channel(64);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let api = Api {
        world: Arc::new(Mutex::new(World::default())),
        live,
        stop: Arc::new(Mutex::new(Some(stop))),
    };
    for n in initial {
        api.apply(n);
    }
    let app = Router::new()
        .route("/api/v1/nodes", get(nodes))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _either = stopped.await;
            })
            .await
    });
    let config = kube::Config::new(url.parse().unwrap());
    (api, kube::Client::try_from(config).unwrap())
}

/// A published node as (name, CIDRs, addresses).
type Entry = (String, Vec<String>, Vec<String>);

/// The published list.
fn snapshot(nodes: &Nodes) -> Option<Vec<Entry>> {
    nodes.borrow().as_ref().map(|items| {
        items
            .iter()
            .map(|i| match i {
                Item::Node(NodeInfo {
                    name,
                    pod_cidrs,
                    internal_ips,
                }) => (name.clone(), pod_cidrs.clone(), internal_ips.clone()),
                Item::Malformed { name, error } => panic!("{name}: {error}"),
            })
            .collect()
    })
}

fn entry(name: &str, cidr: &str, ip: &str) -> Entry {
    (name.to_owned(), vec![cidr.to_owned()], vec![ip.to_owned()])
}

/// Waits (bounded) until the published list is `want`.
async fn eventually(nodes: &Nodes, want: &[Entry], what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if snapshot(nodes).as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {:?}, want {want:?}",
            snapshot(nodes)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn follows_added_modified_deleted_and_bookmarks() {
    let (api, client) = start(vec![
        node("a", Some("10.1.1.0/24"), "172.20.11.11"),
        node("b", Some("10.1.2.0/24"), "172.20.11.12"),
    ])
    .await;
    let rx = kube_source::watch_nodes(client, DEFAULT_ANNOTATION_PREFIX.to_owned());
    eventually(
        &rx,
        &[
            entry("a", "10.1.1.0/24", "172.20.11.11"),
            entry("b", "10.1.2.0/24", "172.20.11.12"),
        ],
        "initial list",
    )
    .await;

    api.apply(node("c", Some("10.1.3.0/24"), "172.20.11.13"));
    api.apply(node("b", Some("10.1.20.0/24"), "172.20.11.12"));
    api.delete("a");
    api.bookmark();
    eventually(
        &rx,
        &[
            entry("b", "10.1.20.0/24", "172.20.11.12"),
            entry("c", "10.1.3.0/24", "172.20.11.13"),
        ],
        "after the watch events",
    )
    .await;
    let (lists, _) = api.counts();
    assert_eq!(
        lists, 1,
        "the events were applied from the watch, without relisting"
    );
}

#[tokio::test]
async fn a_node_deleted_while_the_watch_was_down_is_removed() {
    let (api, client) = start(vec![
        node("a", Some("10.1.1.0/24"), "172.20.11.11"),
        node("b", Some("10.1.2.0/24"), "172.20.11.12"),
    ])
    .await;
    let rx = kube_source::watch_nodes(client, DEFAULT_ANNOTATION_PREFIX.to_owned());
    eventually(
        &rx,
        &[
            entry("a", "10.1.1.0/24", "172.20.11.11"),
            entry("b", "10.1.2.0/24", "172.20.11.12"),
        ],
        "initial list",
    )
    .await;

    // b is deleted while the client cannot see it, and the connection drops: no DELETED event
    // ever reaches the client. Its watch resumes from a version the server has forgotten, gets
    // 410 Gone, and only a relist shows the node is gone.
    api.delete_unseen("b");
    api.drop_watches();
    eventually(
        &rx,
        &[entry("a", "10.1.1.0/24", "172.20.11.11")],
        "after the relist",
    )
    .await;
    let (lists, watches) = api.counts();
    assert!(
        lists >= 2,
        "expected a relist after 410 Gone, saw {lists} lists"
    );
    assert!(
        watches >= 2,
        "expected the watch to be reopened, saw {watches}"
    );
}

#[tokio::test]
async fn a_pod_cidr_assigned_later_is_picked_up() {
    let (api, client) = start(vec![node("b", None, "172.20.11.12")]).await;
    let rx = kube_source::watch_nodes(client, DEFAULT_ANNOTATION_PREFIX.to_owned());
    let local = Local {
        node_name: "me".into(),
        uplink_addrs: vec!["172.20.11.43/24".parse().unwrap()],
        ..Local::default()
    };
    let routes = |rx: &Nodes| {
        let items = rx.borrow().clone().expect("a list");
        desired::desired(&items, &local)
    };
    eventually(
        &rx,
        &[("b".to_owned(), vec![], vec!["172.20.11.12".to_owned()])],
        "node without a CIDR",
    )
    .await;
    let d = routes(&rx);
    assert!(d.routes.is_empty());
    assert_eq!(d.skipped[0].reason, SkipReason::NoPodCidr);

    api.apply(node("b", Some("10.1.2.0/24"), "172.20.11.12"));
    eventually(
        &rx,
        &[entry("b", "10.1.2.0/24", "172.20.11.12")],
        "CIDR assigned",
    )
    .await;
    let d = routes(&rx);
    assert_eq!(d.routes.len(), 1);
    assert!(d.skipped.is_empty());
}

#[tokio::test]
async fn an_unreachable_api_server_changes_nothing() {
    let (api, client) = start(vec![node("a", Some("10.1.1.0/24"), "172.20.11.11")]).await;
    let mut rx = kube_source::watch_nodes(client, DEFAULT_ANNOTATION_PREFIX.to_owned());
    eventually(
        &rx,
        &[entry("a", "10.1.1.0/24", "172.20.11.11")],
        "initial list",
    )
    .await;
    rx.mark_unchanged();
    // The server goes away: the watch ends, every retry is refused.
    api.shut_down();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "the published list changed while nothing changed"
    );
    assert_eq!(
        snapshot(&rx),
        Some(vec![entry("a", "10.1.1.0/24", "172.20.11.11")])
    );
}
