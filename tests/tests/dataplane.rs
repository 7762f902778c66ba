//! The chain end to end: the agent loads its embedded object, attaches every program inside a
//! throwaway network namespace, pins maps and links, and removes all of it on SIGTERM.

use std::{path::Path, process::Command, time::Duration};

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use hostgw_common::{RouteV4, names};
use hostgw_tests::{
    Agent, Netns, PinDir, TcFilter, agent_binary,
    lab::{log_events, wait_for},
    require_root, sh,
};

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
    let dump = sh(Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pins.path().join(names::ROUTES_V4)));
    let dump: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("bpftool JSON");
    let formatted = &dump[0]["formatted"];
    assert_eq!(formatted["key"]["prefix_len"], 24, "{dump}");
    assert_eq!(
        formatted["value"]["node_ip"],
        serde_json::json!([172, 20, 11, 42]),
        "{dump}"
    );
    assert_eq!(formatted["value"]["mtu"], 1500, "{dump}");

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

/// hostgw's bpf filters on the ingress of `dev`.
fn hostgw_filters(ns: &Netns, dev: &str) -> Vec<TcFilter> {
    hostgw_tests::hostgw_filters(ns.name(), dev)
}

/// The qdisc kinds on `dev`.
fn qdiscs(ns: &Netns, dev: &str) -> Vec<String> {
    let out = sh(ns.command("tc").args(["-j", "qdisc", "show", "dev", dev]));
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tc JSON");
    q.as_array()
        .expect("qdiscs")
        .iter()
        .filter_map(|q| q["kind"].as_str().map(str::to_owned))
        .collect()
}

/// The TC hooks of [`node`] and their programs.
const TC_HOOKS: [(&str, &str); 3] = [
    ("up0", names::PROG_INGRESS),
    ("cni0", names::PROG_EGRESS),
    ("veth-pod0", names::PROG_EGRESS),
];

/// With clsact filters (kernels without tcx, or `--tc-attach clsact`) each hook has exactly
/// one hostgw filter, at hostgw's priority and handle: adopted in place after a SIGKILL (the
/// running program stays), replaced atomically with `--replace-programs`, listed by `status`
/// as `clsact`, and removed on SIGTERM together with the qdiscs the agent added. An admin's
/// qdisc and filter on the bridge stay.
#[test]
fn clsact_filters_are_adopted_after_a_kill_and_removed_on_exit() {
    require_root();
    let ns = Netns::new("clsact");
    node(&ns);
    sh(ns
        .command("tc")
        .args(["qdisc", "add", "dev", "cni0", "clsact"]));
    sh(ns.command("tc").args([
        "filter", "add", "dev", "cni0", "ingress", "pref", "49152", "u32", "match", "u32", "0", "0",
    ]));
    let pins = PinDir::new("clsact");
    let pin_dir = pins.path().to_str().expect("UTF-8 path").to_owned();
    let start = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--netns",
            ns.name(),
            "--uplink",
            "up0",
            "--bridge",
            "cni0",
            "--pin-dir",
            &pin_dir,
            "--tc-attach",
            "clsact",
        ];
        args.extend_from_slice(extra);
        let mut agent = Agent::start(&args);
        agent.wait_until(Duration::from_secs(30), "a filter on every TC hook", || {
            TC_HOOKS
                .iter()
                .all(|(dev, _)| hostgw_filters(&ns, dev).len() == 1)
        });
        agent
    };
    // Every hook: exactly one filter of its program at pref 18503, handle 0x4847.
    let ids = || -> Vec<u64> {
        TC_HOOKS
            .iter()
            .map(|(dev, prog)| {
                let filters = hostgw_filters(&ns, dev);
                assert_eq!(filters.len(), 1, "hostgw filters on {dev}: {filters:?}");
                let f = &filters[0];
                assert_eq!(
                    (f.pref, f.handle.as_str(), f.name.as_str()),
                    (18503, "0x4847", *prog),
                    "on {dev}"
                );
                f.prog_id
            })
            .collect()
    };

    let mut agent = start(&[]);
    let first = ids();
    let status = sh(Command::new(agent_binary()).args([
        "status",
        "--netns",
        ns.name(),
        "--pin-dir",
        &pin_dir,
        "-o",
        "json",
    ]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    // The kernel's features as its release promises them: tcx from 6.6, managed neighbours
    // from 5.16, and the conntrack kfuncs (loaded here) wherever they are.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse().expect("a release number"))
        .collect();
    let features = &status["features"];
    assert_eq!(
        features["tcx"],
        version >= vec![6, 6],
        "{release}: {features}"
    );
    assert_eq!(
        features["managed_neighbours"],
        version >= vec![5, 16],
        "{release}: {features}"
    );
    let kfuncs = features["conntrack_kfuncs"].as_str().unwrap_or_default();
    assert!(
        kfuncs == "vmlinux" || kfuncs == "module nf_conntrack",
        "{release}: {features}"
    );
    let mut listed: Vec<(String, String)> = status["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| {
            (
                p["interface"].as_str().expect("interface").to_owned(),
                p["mode"].as_str().expect("mode").to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("cni0", "clsact"),
            ("up0", "clsact"),
            ("veth-pod0", "clsact")
        ]
        .map(|(i, m)| (i.to_owned(), m.to_owned()))
        .to_vec(),
        "{status}"
    );

    // SIGKILL and a restart: the same filters, the running programs kept.
    agent.stop(libc::SIGKILL, Duration::from_secs(10));
    assert_eq!(ids(), first, "the killed agent's filters are still there");
    let agent = start(&["--log-format", "json"]);
    wait_for(
        Duration::from_secs(30),
        || format!("the filters adopted:\n{}", agent.log()),
        || {
            let adopted = log_events(&agent.log())
                .iter()
                .filter(|e| e.message() == "adopted the clsact filter")
                .count();
            (adopted == TC_HOOKS.len()).then_some(())
        },
    );
    assert_eq!(ids(), first, "adopting changed the filters");

    // Again, with --replace-programs: new programs, still one filter per hook.
    let mut agent = agent;
    agent.stop(libc::SIGKILL, Duration::from_secs(10));
    let mut agent = start(&["--replace-programs"]);
    agent.wait_until(Duration::from_secs(30), "the filters replaced", || {
        ids().iter().zip(&first).all(|(now, before)| now != before)
    });

    // SIGTERM: no filter of ours and none of the qdiscs the agent added; the admin's stay.
    let exit = agent.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(exit.success(), "agent exited with {exit}:\n{}", agent.log());
    for (dev, _) in TC_HOOKS {
        assert_eq!(
            hostgw_filters(&ns, dev),
            vec![],
            "hostgw filters left on {dev}"
        );
    }
    for dev in ["up0", "veth-pod0"] {
        assert!(
            !qdiscs(&ns, dev).contains(&"clsact".to_owned()),
            "clsact left on {dev}"
        );
    }
    assert!(
        qdiscs(&ns, "cni0").contains(&"clsact".to_owned()),
        "the admin's qdisc went"
    );
    let admin = sh(ns
        .command("tc")
        .args(["-j", "filter", "show", "dev", "cni0", "ingress"]));
    let admin: serde_json::Value = serde_json::from_slice(&admin.stdout).expect("tc JSON");
    assert!(
        admin
            .as_array()
            .expect("filters")
            .iter()
            .any(|f| f["kind"] == "u32"),
        "the admin's filter went: {admin}"
    );
    assert!(!pins.path().exists(), "{} left", pins.path().display());
}
