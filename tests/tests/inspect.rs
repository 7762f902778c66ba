//! The operator's view on a lab node: `hostgw-agent routes|endpoints|stats|status -o json`
//! compared with what the lab knows, a route deleted behind the agent's back shown as a
//! mismatch, and the metrics endpoint scraped and parsed.

use std::{collections::BTreeMap, io::Read as _, process::Command, time::Duration};

use hostgw_tests::{
    Netns, PinDir, agent_binary,
    lab::{self, Lab, Mode, Spec},
    require_root, sh,
};
use serde_json::Value;

/// `hostgw-agent <cmd> -o json` on node `i`.
fn inspect(lab: &Lab, i: usize, cmd: &str) -> Value {
    let node = lab.node(i);
    let out = sh(Command::new(agent_binary()).args([
        cmd,
        "--netns",
        node.netns(),
        "--pin-dir",
        node.pin_dir().to_str().expect("UTF-8 pin dir"),
        "-o",
        "json",
    ]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`{cmd} -o json` printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `GET path` from node `i`'s agent (its HTTP endpoint listens inside the node's namespace).
fn http_get(lab: &Lab, i: usize, path: &'static str) -> String {
    let netns = lab.node(i).netns().to_owned();
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).expect("entering the node");
        let mut s =
            std::net::TcpStream::connect("127.0.0.1:9403").expect("the agent's HTTP endpoint");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("a response");
        out
    })
    .join()
    .expect("HTTP thread")
}

/// `name{labels} value` lines of a Prometheus text exposition (sums in the histogram are
/// dropped: every value compared here is a whole number).
fn samples(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| l.starts_with("hostgw_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn inspection_commands_and_metrics_show_the_lab() {
    let mut lab = Lab::start("inspect", &Spec::new(2, 1, Mode::FastPath));
    let (pod, remote) = (lab.pod(1, 1), lab.pod(2, 1));
    // A warm-up lets the agent learn the pods (their first packets take the kernel path).
    let warm = lab.ping(pod, remote.ip(), 3, Duration::from_millis(200));
    assert_eq!(warm.received, 3, "warm-up pings");
    let stats = lab.ping(pod, remote.ip(), 20, Duration::from_millis(20));
    assert_eq!(stats.received, 20, "pings");
    let warm = lab.ping(pod, remote.ip6(), 3, Duration::from_millis(200));
    assert_eq!(warm.received, 3, "IPv6 warm-up pings");
    let stats = lab.ping(pod, remote.ip6(), 20, Duration::from_millis(20));
    assert_eq!(stats.received, 20, "IPv6 pings");

    // routes: node 2's CIDRs via its uplink addresses and MAC, matching the kernel, IPv4
    // first.
    let routes = inspect(&lab, 1, "routes");
    let rows = routes.as_array().expect("a list");
    assert_eq!(rows.len(), 2, "{routes}");
    let n2 = lab.node(2);
    for (r, cidr, via) in [
        (&rows[0], n2.pod_cidr(), n2.uplink_ip().to_string()),
        (&rows[1], n2.pod_cidr6(), n2.uplink_ip6().to_string()),
    ] {
        assert_eq!(r["cidr"], cidr);
        assert_eq!(r["node_ip"], via);
        assert_eq!(r["node_mac"], lab::mac_string(n2.uplink_mac()));
        assert_eq!(r["kernel_via"], via);
        assert_eq!(r["uplink"], "eth0");
        assert_eq!(r["status"], "ok", "{r}");
    }

    // endpoints: the pod that pinged, on its veth, by both its addresses.
    let eps = inspect(&lab, 1, "endpoints");
    for ip in [pod.ip().to_string(), pod.ip6().to_string()] {
        let ep = eps
            .as_array()
            .expect("a list")
            .iter()
            .find(|e| e["ip"] == ip)
            .unwrap_or_else(|| panic!("{ip} missing from {eps}"));
        assert_eq!(ep["mac"], lab::mac_string(pod.mac()));
        assert_eq!(ep["veth"], pod.host_veth());
    }

    // stats: the pings went through the fast path.
    let stats = inspect(&lab, 1, "stats");
    let count = |family: &str, hook: &str, reason: &str| {
        stats
            .as_array()
            .expect("a list")
            .iter()
            .find(|s| s["family"] == family && s["hook"] == hook && s["reason"] == reason)
            .map_or(0, |s| s["packets"].as_u64().expect("packets"))
    };
    for family in ["ipv4", "ipv6"] {
        assert!(count(family, "egress", "fast_egress") >= 20, "{stats}");
        assert!(count(family, "ingress_tc", "fast_ingress") >= 20, "{stats}");
    }

    // status: every hook, how it is attached, map fill, and the agent's own report.
    let status = inspect(&lab, 1, "status");
    let programs: Vec<(String, String)> = status["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| {
            (
                p["pin"].as_str().unwrap().to_owned(),
                p["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let veth = format!("hostgw_egress@{}", pod.host_veth());
    for (pin, mode) in [
        ("hostgw_egress@cni0", "tcx"),
        (veth.as_str(), "tcx"),
        ("hostgw_ingress@eth0", "tcx"),
    ] {
        assert!(
            programs.contains(&(pin.to_owned(), mode.to_owned())),
            "{pin} ({mode}) missing: {programs:?}"
        );
    }
    // The lab's uplinks are veths: `--xdp auto` leaves XDP off there.
    assert_eq!(programs.len(), 3, "{programs:?}");
    assert_eq!(status["forwarding_v4"], true);
    assert_eq!(status["forwarding_v6"], true, "{status}");
    for map in ["ROUTES_V4", "ROUTES_V6"] {
        let fill = status["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["map"] == map)
            .unwrap_or_else(|| panic!("{map} missing from {status}"));
        assert_eq!(fill["entries"], 1, "{map}");
    }
    assert_eq!(status["agent"]["ready"], true, "{status}");
    assert_eq!(status["agent"]["last_round"]["routes"], 2, "{status}");

    // metrics: the same counters and state, in Prometheus text format.
    let response = http_get(&lab, 1, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let m = samples(&response);
    for family in ["ipv4", "ipv6"] {
        let fast = m[&format!(
            "hostgw_datapath_packets_total{{family=\"{family}\",hook=\"egress\",reason=\"fast_egress\"}}"
        )];
        assert!(fast >= 20, "{family} fast_egress {fast}");
        assert_eq!(
            m[&format!("hostgw_nodes_programmed{{family=\"{family}\"}}")],
            1
        );
    }
    assert_eq!(m["hostgw_map_entries{map=\"ROUTES_V4\"}"], 1);
    assert_eq!(m["hostgw_map_entries{map=\"ROUTES_V6\"}"], 1);
    assert_eq!(
        m["hostgw_map_capacity{map=\"ENDPOINTS_V4\"}"],
        u64::from(hostgw_common::MAX_ENDPOINTS)
    );
    assert!(m["hostgw_reconcile_rounds_total"] >= 1);
    assert_eq!(
        m["hostgw_conntrack_gate{mode=\"auto\"}"], 0,
        "no NAT in the lab"
    );
    assert!(http_get(&lab, 1, "/readyz").starts_with("HTTP/1.1 200"));

    // A route deleted while no agent runs shows as a mismatch; the commands need no agent.
    lab.kill_agent(1, libc::SIGKILL);
    lab.node(1)
        .ns()
        .ip(&["route", "del", &lab.node(2).pod_cidr()]);
    let routes = inspect(&lab, 1, "routes");
    assert_eq!(routes[0]["status"], "mismatch: no kernel route", "{routes}");
    // The attach mode comes from the link itself, not from the pin's name.
    let links = lab.node(1).pin_dir().join("links");
    std::fs::rename(
        links.join("hostgw_ingress@eth0"),
        links.join("hostgw_xdp@eth0"),
    )
    .expect("renaming a pin");
    let status = inspect(&lab, 1, "status");
    let renamed = status["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .find(|p| p["pin"] == "hostgw_xdp@eth0")
        .unwrap_or_else(|| panic!("renamed pin missing: {status}"));
    assert_eq!(renamed["mode"], "tcx", "{status}");
    assert_eq!(renamed["program"], "hostgw_ingress", "{status}");
    let status = inspect(&lab, 1, "status");
    assert!(status["agent"].is_null(), "an agent answered: {status}");
}

/// `status` reports the sizes of the maps as the kernel has them, not this build's: a pin
/// directory left by a build with other sizes shows those.
#[test]
fn status_reports_the_pinned_maps_sizes() {
    require_root();
    let ns = Netns::new("sizes");
    let pins = PinDir::new("sizes");
    std::fs::create_dir_all(pins.path()).expect("pin directory");
    let maps = [
        ("ROUTES_V4", "lpm_trie", 8, 28, 32),
        ("ROUTES_V6", "lpm_trie", 20, 40, 48),
        ("ENDPOINTS_V4", "hash", 4, 12, 64),
        ("ENDPOINTS_V6", "hash", 16, 12, 80),
        ("STATE", "array", 4, size_of::<hostgw_common::State>(), 1),
    ];
    for (name, kind, key, value, entries) in maps {
        let path = pins.path().join(name);
        let mut cmd = Command::new("bpftool");
        cmd.args(["map", "create"])
            .arg(&path)
            .args(["type", kind, "key", &key.to_string(), "value"])
            .args([
                &value.to_string(),
                "entries",
                &entries.to_string(),
                "name",
                name,
            ]);
        if kind == "lpm_trie" {
            // BPF_F_NO_PREALLOC: LPM tries require it.
            cmd.args(["flags", "1"]);
        }
        sh(&mut cmd);
    }
    let out = sh(Command::new(agent_binary()).args([
        "status",
        "--netns",
        ns.name(),
        "--pin-dir",
        pins.path().to_str().expect("UTF-8 pin dir"),
        "-o",
        "json",
    ]));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let sizes: BTreeMap<String, u64> = status["maps"]
        .as_array()
        .unwrap_or_else(|| panic!("no maps in {status}"))
        .iter()
        .map(|m| {
            (
                m["map"].as_str().expect("map name").to_owned(),
                m["capacity"].as_u64().expect("capacity"),
            )
        })
        .collect();
    let want: BTreeMap<String, u64> = maps[..4]
        .iter()
        .map(|(name, .., entries)| ((*name).to_owned(), *entries))
        .collect();
    assert_eq!(sizes, want, "{status}");
    assert_eq!(
        status["programs"],
        Value::Array(vec![]),
        "no links pinned: {status}"
    );
}

/// A Node that claims the cloud metadata address as its pod CIDR (what a compromised kubelet
/// could write) gets no route on the other nodes; the refusal is in the log and in
/// `hostgw_nodes_skipped`, and the other nodes keep forwarding.
#[test]
fn a_node_claiming_the_metadata_address_is_refused_and_reported() {
    let mut list: Vec<lab::NodeEntry> = (1..=3).map(lab::NodeEntry::of_v4).collect();
    list[2].pod_cidr = "169.254.169.254/32".into();
    let lab = Lab::start(
        "metadata",
        &Spec {
            node_list: Some(list),
            ipv6: false,
            ..Spec::new(3, 1, Mode::FastPath)
        },
    );
    for i in [1, 2] {
        let routes = lab.agent_routes(i);
        assert!(
            !routes.keys().any(|c| c.starts_with("169.254.")),
            "n{i} routes the metadata address: {routes:?}"
        );
        assert_eq!(routes.len(), 1, "n{i} routes: {routes:?}");
        let reported = lab.agent_events(i).iter().any(|e| {
            e.level == "WARN"
                && e.field_str("node") == Some("n3")
                && e.field_str("reason") == Some("reserved_cidr")
        });
        assert!(
            reported,
            "n{i} did not name the refusal:\n{}",
            lab.agent_log(i)
        );
        let metrics = samples(&http_get(&lab, i, "/metrics"));
        assert_eq!(
            metrics.get("hostgw_nodes_skipped{reason=\"reserved_cidr\",family=\"ipv4\"}"),
            Some(&1),
            "n{i} metrics: {metrics:?}"
        );
    }
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 1).ip(),
        3,
        Duration::from_millis(100),
    );
    assert_eq!(s.received, 3, "n1p1 → n2p1 next to the refused node");
}

/// An admin's route for a remote pod CIDR (`proto static`, via another node) is left alone:
/// not replaced for as long as it is there, the CIDR out of the trie, `routes` showing the
/// conflict, the log naming it and `hostgw_route_conflicts` counting it; once it is deleted,
/// hostgw's route and trie entry come back.
#[test]
fn a_foreign_route_for_a_pod_cidr_is_left_alone_and_shown() {
    let lab = Lab::start(
        "foreign",
        &Spec {
            ipv6: false,
            ..Spec::new(3, 1, Mode::FastPath)
        },
    );
    let cidr = lab.node(2).pod_cidr();
    let via3 = lab.node(3).uplink_ip().to_string();
    let ns = lab.node(1).ns();
    let theirs = || {
        let out = sh(Command::new("ip").args(["-n", lab.node(1).netns(), "route", "show", &cidr]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ns.ip(&[
        "route",
        "replace",
        &cidr,
        "via",
        &via3,
        "dev",
        lab::UPLINK,
        "proto",
        "static",
    ]);
    // The route event wakes the agent at once; it must leave the route alone every time.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let now = theirs();
        assert!(
            now.contains(&format!("via {via3}")) && now.contains("proto static"),
            "the admin's route was changed to {now:?}\n{}",
            lab.agent_log(1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lab.trie_entry(1, &cidr).is_none(),
        "{cidr} is still in the trie: {:?}",
        lab.trie_entry(1, &cidr)
    );
    let rows = inspect(&lab, 1, "routes");
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["cidr"] == cidr.as_str()))
        .unwrap_or_else(|| panic!("routes has no row for {cidr}: {rows}"));
    assert_eq!(row["status"], "conflict: foreign route", "{row}");
    assert_eq!(row["kernel_via"], via3.as_str(), "{row}");
    let metrics = samples(&http_get(&lab, 1, "/metrics"));
    assert_eq!(
        metrics.get("hostgw_route_conflicts"),
        Some(&1),
        "{metrics:?}"
    );
    assert!(
        lab.agent_events(1)
            .iter()
            .any(|e| e.level == "WARN" && e.field_str("cidr") == Some(cidr.as_str())),
        "the conflict was not logged:\n{}",
        lab.agent_log(1)
    );

    ns.ip(&["route", "del", &cidr, "proto", "static"]);
    let via2 = lab.node(2).uplink_ip();
    lab::wait_for(
        Duration::from_secs(5),
        || format!("n1 to route {cidr} again: {:?}", lab.agent_routes(1)),
        || {
            (lab.agent_routes(1).get(&cidr) == Some(&via2) && lab.trie_entry(1, &cidr).is_some())
                .then_some(())
        },
    );
}
