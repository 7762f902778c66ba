//! The nodes file as config tools write it: rewritten in place, in pieces, while the agents
//! read it (see `hostgw_tests::lab`).

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hostgw_tests::lab::{self, Lab, Mode, NodeEntry, Spec, wait_for};

const NODES: usize = 3;
/// How long an edit of the nodes file may take to reach the agents.
const FILE_EDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The nodes file rewritten in place, in pieces with pauses longer than a read takes (the
/// header alone, then one node after another, each prefix a list that parses): n2's routes
/// to n1's and n3's pods stay in place the whole time, polled every 20 ms, and the rewritten
/// file applies once it is closed (n3 moved to another CIDR).
#[test]
fn a_nodes_file_rewritten_in_place_removes_no_route_meanwhile() {
    let lab = Lab::start("fpieces", &Spec::new(NODES, 1, Mode::FastPath));
    let before = lab.agent_routes(2);
    assert_eq!(before.len(), 2, "n2 routes: {before:?}");
    let mut entries: Vec<NodeEntry> = (1..=NODES).map(NodeEntry::of).collect();
    entries[2].pod_cidr = "10.1.33.0/24".into();
    entries[2].pod_cidr_v6 = None;
    // `kind` first, so that every prefix cut at an item is a list that parses.
    let yaml = lab::node_list_yaml(&entries)
        .replace(
            "apiVersion: v1\nitems:\n",
            "apiVersion: v1\nkind: List\nitems:\n",
        )
        .replace("kind: List\nmetadata:\n  resourceVersion: \"\"\n", "");
    // The header, then each node.
    let mut cuts: Vec<usize> = yaml
        .match_indices("\n- apiVersion")
        .map(|(i, _)| i + 1)
        .collect();
    cuts.push(yaml.len());
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, netns) = (Arc::clone(&stop), lab.node(2).netns().to_owned());
        std::thread::spawn(move || {
            let mut fewest = usize::MAX;
            while !stop.load(Ordering::Relaxed) {
                fewest = fewest.min(lab::agent_routes_in(&netns).len());
                std::thread::sleep(Duration::from_millis(20));
            }
            fewest
        })
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(lab.nodes_file())
        .expect("the nodes file");
    let mut at = 0;
    for cut in cuts {
        file.write_all(&yaml.as_bytes()[at..cut])
            .expect("writing a piece");
        file.flush().expect("flushing");
        at = cut;
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(file);
    wait_for(
        FILE_EDIT_TIMEOUT,
        || {
            format!(
                "n2 to route 10.1.33.0/24: {:?}\n{}",
                lab.agent_routes(2),
                lab.agent_log(2)
            )
        },
        || {
            lab.agent_routes(2)
                .contains_key("10.1.33.0/24")
                .then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    let fewest = poller.join().expect("the route poller");
    assert_eq!(
        fewest,
        2,
        "n2 had fewer routes while the file was being rewritten\n{}",
        lab.agent_log(2)
    );
}
