//! The `install-cni` init container's script on a fake node: the conflist it writes for one
//! or both families, the bridge it creates or adopts, and the failures that say why.

use std::fs;

use serde_json::Value;

use crate::{
    NODE_NAME,
    agent_cli::container_env,
    fake_node::{FakeNode, conflist_ranges, ip6_addrs, stderr, stderr_last, stderr_lines},
    load::Manifests,
    read,
};

/// What install-cni says when a node's IPv6 pod CIDR is not one it can serve.
const EXPECTED_IPV6: &str = "expected an IPv6 network between /64 and /120 in the form \
                             Kubernetes writes, ending in :: (fd00:10:244:1::/64)";

/// A Node whose pod CIDRs install-cni refuses, and why.
struct Refused {
    cidrs: &'static [&'static str],
    message: String,
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
    assert_eq!(
        stderr_lines(&again),
        [format!(
            "install-cni: 10-hostgw.conflist is up to date (pod CIDR 10.1.79.0/24, bridge \
             {bridge}, MTU 9000)"
        )]
    );
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
    assert_eq!(
        stderr_last(&clash),
        format!(
            "install-cni: bridge {bridge} has the address(es) 10.9.9.1/24, not 10.1.79.1/24: the \
             bridge plugin would refuse it; delete the bridge if nothing uses it"
        )
    );
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
    assert_eq!(
        stderr_lines(&out),
        [
            "install-cni: the node has a CNI configuration (10-flannel.conflist): not installing \
             10-hostgw.conflist"
        ]
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
    assert_eq!(
        stderr_last(&out),
        format!(
            "install-cni: node {NODE_NAME} has no spec.podCIDR (the controller manager allocates \
             them with --allocate-node-cidrs and --cluster-cidr); gave up after 0s"
        )
    );
    assert!(node.files("net.d").is_empty());

    // The API server refuses: said so, not mistaken for a missing CIDR.
    impatient.insert("FAKE_CURL_FAIL".to_owned(), "1".to_owned());
    let out = node.run(script, &impatient);
    assert!(!out.status.success());
    assert_eq!(
        stderr_last(&out),
        format!("install-cni: cannot read node {NODE_NAME} from the API server; gave up after 0s")
    );

    // A wrong uplink name is reported as such.
    let mut wrong_uplink = env.clone();
    wrong_uplink.insert("HOSTGW_UPLINK".to_owned(), "nosuch0".to_owned());
    node.serve_node(Some("10.1.79.0/24"));
    let out = node.run(script, &wrong_uplink);
    assert!(!out.status.success());
    assert_eq!(
        stderr_last(&out),
        "install-cni: no interface nosuch0 on this node: set HOSTGW_UPLINK in the hostgw-config \
         ConfigMap"
    );
    assert!(node.files("net.d").is_empty());
    assert!(
        node.take_log("ip").is_empty(),
        "no link touched before the checks pass"
    );
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
    assert_eq!(
        stderr_lines(&out),
        [
            format!("install-cni: created bridge {bridge} with 10.1.79.1/24 and fd00:10:1::1/64"),
            format!(
                "install-cni: wrote 10-hostgw.conflist (pod CIDRs 10.1.79.0/24 and \
                 fd00:10:1::/64, bridge {bridge}, MTU 9000)"
            ),
        ]
    );

    // Again, with the bridge holding both addresses (and its IPv6 link-local one).
    node.write(&format!("sys/{bridge}/bridge/stp_state"), "0\n");
    node.write(
        "ip-addrs",
        &format!("7: {bridge}    inet 10.1.79.1/24 brd 10.1.79.255 scope global {bridge}\\\n"),
    );
    node.write("ip6-addrs", &ip6_addrs(bridge, &["fd00:10:1::1/64"]));
    let again = node.run(script, &env);
    assert!(again.status.success(), "second run: {}", stderr(&again));
    assert_eq!(
        stderr_lines(&again),
        [format!(
            "install-cni: 10-hostgw.conflist is up to date (pod CIDRs 10.1.79.0/24 and \
             fd00:10:1::/64, bridge {bridge}, MTU 9000)"
        )]
    );
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
    assert_eq!(
        stderr_last(&clash),
        format!(
            "install-cni: bridge {bridge} has the IPv6 address(es) fd00:99::1/64, not \
             fd00:10:1::1/64: it belongs to another pod network; delete the bridge if nothing \
             uses it"
        ),
        "the link-local address is not counted"
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
    assert_eq!(
        stderr_last(&clash),
        format!(
            "install-cni: bridge {bridge} has the IPv6 address(es) fd00:10:1::1/64 \
             2001:db8:7::1/64, not fd00:10:1::1/64: it belongs to another pod network; delete \
             the bridge if nothing uses it"
        )
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
    assert_eq!(
        stderr_lines(&out),
        [
            format!("install-cni: created bridge {bridge} with fd00:10:1::1/64"),
            format!(
                "install-cni: wrote 10-hostgw.conflist (pod CIDR fd00:10:1::/64, bridge {bridge}, \
                 MTU 9000)"
            ),
        ]
    );

    // Again: the bridge's IPv4 addresses are not its business.
    node.write(&format!("sys/{bridge}/bridge/stp_state"), "0\n");
    node.write("ip6-addrs", &ip6_addrs(bridge, &["fd00:10:1::1/64"]));
    let again = node.run(script, &env);
    assert!(again.status.success(), "second run: {}", stderr(&again));
    assert_eq!(
        stderr_lines(&again),
        [format!(
            "install-cni: 10-hostgw.conflist is up to date (pod CIDR fd00:10:1::/64, bridge \
             {bridge}, MTU 9000)"
        )]
    );
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
    assert_eq!(
        stderr_last(&out),
        format!(
            "install-cni: cannot give {bridge} the address fd00:10:1::1/64: is IPv6 disabled on \
             the node (net.ipv6.conf.{bridge}.disable_ipv6)?"
        )
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

    let not_served = |cidr: &str| format!("install-cni: pod CIDR {cidr}: {EXPECTED_IPV6}");
    let rows = [
        Refused {
            cidrs: &["fd00:10:1::/56"],
            message: not_served("fd00:10:1::/56"),
        },
        Refused {
            cidrs: &["fd00:10:1::/124"],
            message: not_served("fd00:10:1::/124"),
        },
        Refused {
            cidrs: &["fd00:10:1::1/64"],
            message: not_served("fd00:10:1::1/64"),
        },
        Refused {
            cidrs: &["fd00:10:1:2::1:0/112"],
            message: not_served("fd00:10:1:2::1:0/112"),
        },
        Refused {
            cidrs: &["FD00:10:1::/64"],
            message: not_served("FD00:10:1::/64"),
        },
        Refused {
            cidrs: &["::/64"],
            message: not_served("::/64"),
        },
        Refused {
            cidrs: &["fd00:10:1:::/64"],
            message: not_served("fd00:10:1:::/64"),
        },
        Refused {
            cidrs: &["fd00:10:1:2:ff80::/72"],
            message: format!(
                "install-cni: pod CIDR fd00:10:1:2:ff80::/72 has host bits set: {EXPECTED_IPV6}"
            ),
        },
        Refused {
            cidrs: &["fd00:10:1::/64", "fd00:20:1::/64"],
            message: format!(
                "install-cni: node {NODE_NAME} has two IPv6 pod CIDRs, fd00:10:1::/64 and \
                 fd00:20:1::/64: expected at most one of each family"
            ),
        },
        Refused {
            cidrs: &["10.1.79.0/24", "10.1.80.0/24"],
            message: format!(
                "install-cni: node {NODE_NAME} has two IPv4 pod CIDRs, 10.1.79.0/24 and \
                 10.1.80.0/24: expected at most one of each family"
            ),
        },
        Refused {
            cidrs: &["10.1.79.0/24", "fd00:10:1::/48"],
            message: not_served("fd00:10:1::/48"),
        },
    ];
    let mut failures = Vec::new();
    for row in &rows {
        let cidrs = row.cidrs;
        node.serve_node_cidrs(cidrs);
        let out = node.run(script, &env);
        let ip_log = node.take_log("ip");
        if out.status.success() {
            failures.push(format!("{cidrs:?} was accepted"));
            continue;
        }
        let message = stderr_last(&out);
        if message != row.message {
            failures.push(format!(
                "{cidrs:?}: said {message:?}, not {:?}",
                row.message
            ));
        }
        if !node.files("net.d").is_empty() {
            failures.push(format!("{cidrs:?}: wrote {:?}", node.files("net.d")));
        }
        if !ip_log.is_empty() {
            failures.push(format!("{cidrs:?}: touched links: {ip_log:?}"));
        }
    }
    assert!(failures.is_empty(), "refusals:\n{}", failures.join("\n"));
}
