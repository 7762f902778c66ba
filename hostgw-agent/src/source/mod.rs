//! The node source: a `NodeList` file, watched (or the Kubernetes API, [`kube`]). Every
//! successful read is published as the full current list (level-triggered); a read that
//! fails is logged and the last good list stays in force. The file's content is kept as read
//! (`Bytes`), so a poll that finds it unchanged costs a comparison, not a parse.

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

/// Reads `path` now and starts watching it. The returned receiver holds the first read's
/// result already when the file is good.
pub fn watch_file(path: PathBuf, annotation_prefix: String) -> Nodes {
    let mut state = State {
        prefix: annotation_prefix,
        ..State::default()
    };
    state.read(&path);
    let (tx, rx) = watch::channel(state.good.clone().map(Arc::new));
    tokio::spawn(run(path, tx, state));
    rx
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

async fn run(path: PathBuf, tx: watch::Sender<Option<Arc<Vec<Item>>>>, mut state: State) {
    let (event_tx, mut events) = mpsc::channel::<()>(16);
    // The directory is watched, not the file: editors and ConfigMap updates replace it.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let watcher = notify::recommended_watcher(move |_event| {
        let _full = event_tx.try_send(());
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch; polling only");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            Some(()) = events.recv() => {
                // Let a burst of events (write, rename, chmod) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while events.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
        }
        if let Some(items) = state.read(&path) {
            tx.send_replace(Some(Arc::new(items)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "apiVersion: v1\nkind: List\nitems: []\n";

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
