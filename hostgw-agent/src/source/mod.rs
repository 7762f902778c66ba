//! The node source: a `NodeList` file, watched (or the Kubernetes API, [`kube`]). Every
//! successful read is published as the full current list (level-triggered); a read that
//! fails is logged and the last good list stays in force. The file's content is kept as read
//! (`Bytes`), so a poll that finds it unchanged costs a comparison, not a parse.
//!
//! A file rewritten in place is not read while it is being written: after a write
//! notification the watcher waits for the writer to close the file (or for a rename or
//! create over it, as editors and `ConfigMap` updates do), and reads it only then. A writer
//! that keeps it open without writing for [`WRITE_TIMEOUT`], and changes the polls find
//! without a notification, are read once two reads [`SETTLE`] apart agree.

pub mod kube;
pub mod nodes;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use notify::Watcher as _;
use tokio::sync::{mpsc, watch};

pub use self::nodes::{Item, NodeInfo};

/// The latest good node list; `None` until the first successful read.
pub type Nodes = watch::Receiver<Option<Arc<Vec<Item>>>>;

/// How often the file is read even without a change notification (a safety net for file
/// systems and update patterns inotify misses).
const POLL: Duration = Duration::from_secs(2);
/// How long a file left open after a write is waited for before it is read anyway.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The interval of the two reads that must agree before a change without a close is used.
const SETTLE: Duration = Duration::from_millis(100);

/// What a notification says about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Written to, possibly not finished.
    Writing,
    /// Closed after writing, or replaced (created, renamed over, removed): complete.
    Done,
}

impl Change {
    /// The change `event` makes to `file`, if any.
    fn of(event: &notify::Event, file: &Path) -> Option<Self> {
        use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
        if !event
            .paths
            .iter()
            .any(|p| p.file_name() == file.file_name())
        {
            return None;
        }
        match event.kind {
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => Some(Self::Writing),
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => Some(Self::Done),
            // Attribute changes (a truncation reports one, before the writes) say nothing
            // about the content being complete.
            _ => None,
        }
    }
}

/// Reads `path` now and starts watching it. The returned receiver holds the first read's
/// result already when the file is good.
pub fn watch_file(path: PathBuf, annotation_prefix: String) -> Nodes {
    let mut state = State {
        prefix: annotation_prefix,
        ..State::default()
    };
    // Watch before the first read, so that no change after it goes unnoticed.
    let (event_tx, events) = mpsc::channel::<Change>(64);
    let watcher = watcher(&path, event_tx);
    state.read(&path);
    let (tx, rx) = watch::channel(state.good.clone().map(Arc::new));
    tokio::spawn(run(path, tx, state, watcher, events));
    rx
}

/// A watcher of `path`'s directory (not the file: editors and `ConfigMap` updates replace
/// it) that sends what each event means for the file; `None` when it cannot watch.
fn watcher(path: &Path, event_tx: mpsc::Sender<Change>) -> Option<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let file = path.to_path_buf();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(change) = event.ok().and_then(|e| Change::of(&e, &file)) {
            let _full = event_tx.try_send(change);
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch; polling only");
            None
        }
    }
}

/// The last good list and the error last reported, so each bad version is logged once.
#[derive(Default)]
struct State {
    prefix: String,
    good: Option<Vec<Item>>,
    reported: Option<String>,
    /// The file's content at the last read.
    content: Option<Bytes>,
}

impl State {
    /// Reads the file; returns the list when it differs from the last good one.
    fn read(&mut self, path: &Path) -> Option<Vec<Item>> {
        let parsed = nodes::read_bytes(path).and_then(|content| {
            if self.content.as_ref() == Some(&content) {
                return Ok(None);
            }
            let items = nodes::parse_bytes(path, &content, &self.prefix);
            self.content = Some(content);
            items.map(Some)
        });
        match parsed {
            Ok(None) => None,
            Ok(Some(items)) => {
                self.reported = None;
                if self.good.as_ref() == Some(&items) {
                    return None;
                }
                tracing::info!(path = %path.display(), nodes = items.len(), "node list read");
                self.good = Some(items.clone());
                Some(items)
            }
            Err(error) => {
                let text = error.to_string();
                if self.reported.as_deref() != Some(text.as_str()) {
                    tracing::error!(%error, "the node list is unusable; keeping the last good one");
                    self.reported = Some(text);
                }
                None
            }
        }
    }
}

async fn run(
    path: PathBuf,
    tx: watch::Sender<Option<Arc<Vec<Item>>>>,
    mut state: State,
    _watcher: Option<notify::RecommendedWatcher>,
    mut events: mpsc::Receiver<Change>,
) {
    // The first read was just made: the first poll is one period away.
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    // While a writer has the file open: when it last wrote.
    let mut writing: Option<tokio::time::Instant> = None;
    loop {
        let timeout = writing.map(|since| since + WRITE_TIMEOUT);
        let settle = tokio::select! {
            () = tx.closed() => return,
            Some(change) = events.recv() => {
                // Let a burst of events (write, close, rename) settle, keeping the last word.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut last = change;
                while let Ok(c) = events.try_recv() {
                    last = c;
                }
                if last == Change::Writing {
                    writing = Some(tokio::time::Instant::now());
                    continue;
                }
                writing = None;
                false
            }
            () = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                writing = None;
                true
            }
            _ = poll.tick() => {
                if writing.is_some() {
                    continue;
                }
                true
            }
        };
        if settle && !settled(&path, &state).await {
            continue;
        }
        if let Some(items) = state.read(&path) {
            tx.send_replace(Some(Arc::new(items)));
        }
    }
}

/// Whether the file, found changed without its writer saying it is done, holds still: two
/// reads [`SETTLE`] apart agree. An unchanged file is settled at once.
async fn settled(path: &Path, state: &State) -> bool {
    let first = nodes::read_bytes(path).ok();
    if first.is_none() || first == state.content {
        return true;
    }
    tokio::time::sleep(SETTLE).await;
    nodes::read_bytes(path).ok() == first
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "apiVersion: v1\nkind: List\nitems: []\n";

    fn node_yaml(name: &str, cidr: &str, ip: &str) -> String {
        format!(
            "- apiVersion: v1\n  kind: Node\n  metadata: {{name: {name}}}\n  spec: {{podCIDR: \
             \"{cidr}\"}}\n  status: {{addresses: [{{type: InternalIP, address: \"{ip}\"}}]}}\n"
        )
    }

    fn names(nodes: &Nodes) -> Vec<String> {
        nodes
            .borrow()
            .as_ref()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Node(n) => Some(n.name.clone()),
                        Item::Malformed { .. } => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A file rewritten in place, in pieces with pauses much longer than a read takes (each
    /// piece on its own a list that parses: the header alone is an empty list), is read only
    /// once its writer closes it: nothing in between is published.
    #[tokio::test]
    async fn a_file_rewritten_in_place_is_read_once_its_writer_closes_it() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("hostgw-pieces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nodes.yaml");
        let header = "apiVersion: v1\nkind: List\nitems:\n";
        let a = node_yaml("a", "10.1.1.0/24", "172.20.11.11");
        let b = node_yaml("b", "10.1.2.0/24", "172.20.11.12");
        std::fs::write(&path, format!("{header}{a}")).unwrap();
        let mut nodes = watch_file(path.clone(), "flannel.alpha.coreos.com".into());
        assert_eq!(names(&nodes), vec!["a"]);
        nodes.mark_unchanged();

        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        for piece in [header, &b, &a] {
            file.write_all(piece.as_bytes()).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(SETTLE * 4).await;
            assert!(
                !nodes.has_changed().unwrap(),
                "a list was published while the file was being written: {:?}",
                names(&nodes)
            );
        }
        drop(file);
        tokio::time::timeout(Duration::from_secs(2), nodes.changed())
            .await
            .expect("the closed file is read")
            .unwrap();
        assert_eq!(names(&nodes), vec!["b", "a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unchanged_file_is_compared_not_parsed_and_a_bad_one_keeps_the_last_good_list() {
        let path = std::env::temp_dir().join(format!("hostgw-source-{}.yaml", std::process::id()));
        std::fs::write(&path, LIST).unwrap();
        let mut state = State::default();
        assert_eq!(state.read(&path), Some(vec![]));
        assert_eq!(state.content.as_deref(), Some(LIST.as_bytes()));
        assert_eq!(state.read(&path), None, "unchanged");
        // Half written: unusable, reported once, the last good list stays.
        std::fs::write(&path, "apiVersion: v1\nkind: List\nitems: [").unwrap();
        assert_eq!(state.read(&path), None);
        assert!(state.reported.is_some());
        assert_eq!(state.good, Some(vec![]));
        assert_eq!(
            state.content.as_deref(),
            Some(&b"apiVersion: v1\nkind: List\nitems: ["[..])
        );
        std::fs::remove_file(&path).unwrap();
    }
}
