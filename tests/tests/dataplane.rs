//! The chain end to end: the agent loads its embedded object, attaches every program inside a
//! throwaway network namespace, pins maps and links, and removes all of it on SIGTERM.

use std::{path::Path, time::Duration};

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use hostgw_common::{RouteV4, names};
use hostgw_tests::{Agent, Netns, PinDir, require_root, sh};

/// One node: an uplink veth (its peer stays in the namespace as the "switch" end), a bridge
/// `cni0`, and one pod veth enslaved to it.
fn node(ns: &Netns) {
    ns.ip(&[
        "link", "add", "up0", "type", "veth", "peer", "name", "up0-sw",
    ]);
    ns.ip(&["link", "add", "cni0", "type", "bridge"]);
    ns.ip(&[
        "link",
        "add",
        "veth-pod0",
        "type",
        "veth",
        "peer",
        "name",
        "pod0",
    ]);
    ns.ip(&["link", "set", "veth-pod0", "master", "cni0"]);
    for dev in ["up0", "up0-sw", "cni0", "veth-pod0", "pod0"] {
        ns.ip(&["link", "set", dev, "up"]);
    }
}

fn links_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("links"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every hook the agent attaches to in [`node`], with the program expected there.
const HOOKS: [(&str, &[&str]); 3] = [
    ("up0", &[names::PROG_XDP, names::PROG_INGRESS]),
    ("cni0", &[names::PROG_EGRESS]),
    ("veth-pod0", &[names::PROG_EGRESS]),
];

/// A namespace holding one [`node`], its pin directory, and an agent started on it with
/// `uplink` as its uplink. `--xdp on` makes it attach XDP even though the uplink is a veth
/// (where `auto` would not), so every hook kind is exercised.
fn start(name: &str, uplink: &str) -> (Netns, PinDir, Agent) {
    require_root();
    let ns = Netns::new(name);
    node(&ns);
    let pins = PinDir::new(name);
    let pin_dir = pins.path().to_str().expect("UTF-8 path").to_owned();
    let agent = Agent::start(&[
        "run",
        "--netns",
        ns.name(),
        "--uplink",
        uplink,
        "--bridge",
        "cni0",
        "--pin-dir",
        &pin_dir,
        "--xdp",
        "on",
    ]);
    (ns, pins, agent)
}

#[test]
fn agent_attaches_pins_and_cleans_up() {
    let (ns, pins, mut agent) = start("attach", "up0");
    let expected_links = vec![
        format!("{}@cni0", names::PROG_EGRESS),
        format!("{}@veth-pod0", names::PROG_EGRESS),
        format!("{}@up0", names::PROG_INGRESS),
        format!("{}@up0", names::PROG_XDP),
    ];
    agent.wait_until(Duration::from_secs(30), "every link pinned", || {
        links_in(pins.path()) == expected_links
    });
    for map in names::PINNED_MAPS {
        assert!(pins.path().join(map).exists(), "map {map} is not pinned");
    }

    // The kernel has the programs on the interfaces.
    for (iface, progs) in HOOKS {
        assert_eq!(ns.attached_programs(iface), progs, "programs on {iface}");
    }

    // An entry written through the pin is printed by bpftool with BTF field names.
    let map = MapData::from_pin(pins.path().join(names::ROUTES_V4)).expect("open pinned trie");
    let mut trie: LpmTrie<MapData, [u8; 4], RouteV4> =
        LpmTrie::try_from(aya::maps::Map::LpmTrie(map)).expect("ROUTES_V4 is an LPM trie");
    let route = RouteV4 {
        node_ip: [172, 20, 11, 42],
        ifindex: 7,
        mtu: 1500,
        flags: hostgw_common::ROUTE_F_RESOLVED,
        node_mac: [2, 0, 0, 0, 0, 0x42],
        uplink_mac: [2, 0, 0, 0, 0, 0x43],
    };
    trie.insert(&Key::new(24, [10, 1, 27, 0]), route, 0)
        .expect("insert a route");
    let dump = sh(std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pins.path().join(names::ROUTES_V4)));
    let dump = String::from_utf8(dump.stdout).expect("UTF-8");
    for field in [
        "\"formatted\"",
        "\"prefix_len\":24",
        "\"node_ip\":[172,20,11,42]",
        "\"mtu\":1500",
    ] {
        assert!(dump.contains(field), "bpftool dump lacks {field}: {dump}");
    }

    // SIGTERM: everything detached and unpinned.
    let status = agent.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        status.success(),
        "agent exited with {status}:\n{}",
        agent.log()
    );
    assert!(
        !pins.path().exists(),
        "{} still exists after shutdown",
        pins.path().display()
    );
    for (iface, _) in HOOKS {
        assert!(
            ns.attached_programs(iface).is_empty(),
            "programs still attached to {iface} after shutdown"
        );
    }
}

#[test]
fn missing_interface_is_named_and_nothing_is_left() {
    let (_ns, pins, mut agent) = start("noiface", "nosuch0");
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "agent started without its uplink");
    let log = agent.log();
    assert!(
        log.contains("\"nosuch0\""),
        "the error does not name the interface:\n{log}"
    );
    assert!(
        !pins.path().exists(),
        "{} created by a failed start",
        pins.path().display()
    );
}
