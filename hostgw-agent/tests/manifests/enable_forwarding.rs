//! The `enable-forwarding` init container's script on a fake node: IPv4 forwarding always,
//! IPv6 forwarding as `HOSTGW_IPV6_FORWARDING` says, with the uplink still taking router
//! advertisements.

use std::fs;

use crate::{
    agent_cli::container_env,
    fake_node::{FakeNode, stderr, stderr_lines, stdout_lines},
    load::Manifests,
    read,
};

const IPV4_TURNED_ON: &str = "enable-forwarding: net.ipv4.ip_forward was off; turned it on";
const IPV4_ON: &str = "enable-forwarding: net.ipv4.ip_forward is on";
const IPV6_TURNED_ON: &str =
    "enable-forwarding: net.ipv6.conf.all.forwarding was off; turned it on";
const NO_IPV6: &str = "enable-forwarding: the host has no IPv6 (booted with ipv6.disable=1?): \
                       leaving IPv6 forwarding alone";
const NO_UPLINK: &str = "enable-forwarding: no interface nosuch0 on this node: set \
                         HOSTGW_UPLINK in the hostgw-config ConfigMap";

#[test]
fn enable_forwarding_turns_ip_forward_on() {
    let manifests = Manifests::load();
    let container = manifests.init_container("enable-forwarding");
    let node = FakeNode::new("forwarding", "eth0");
    let script = manifests.script("enable-forwarding.sh");
    let env = container_env(container, &manifests);
    let out = node.run(script, &env);
    assert!(
        out.status.success(),
        "enable-forwarding failed: {}",
        stderr(&out)
    );
    assert_eq!(read(&node.path("proc-sys-net/ipv4/ip_forward")).trim(), "1");
    assert_eq!(stdout_lines(&out), [IPV4_TURNED_ON, NO_IPV6]);
    let again = node.run(script, &env);
    assert!(again.status.success());
    assert_eq!(stdout_lines(&again), [IPV4_ON, NO_IPV6]);
}

#[test]
fn enable_forwarding_turns_ipv6_forwarding_on_and_keeps_router_advertisements() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("enable-forwarding"), &manifests);
    assert_eq!(
        env["HOSTGW_IPV6_FORWARDING"], "auto",
        "the ConfigMap's setting reaches the container"
    );
    let uplink = &env["HOSTGW_UPLINK"];
    let accept_ra = format!("proc-sys-net/ipv6/conf/{uplink}/accept_ra");
    let forwarding = "proc-sys-net/ipv6/conf/all/forwarding";
    let node = FakeNode::new("forwarding-v6", uplink);
    node.with_ipv6(&[(uplink, "1"), ("eth9", "1")]);
    let script = manifests.script("enable-forwarding.sh");

    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read(forwarding), "1");
    assert_eq!(
        node.read(&accept_ra),
        "2",
        "the uplink keeps taking router advertisements"
    );
    assert_eq!(
        node.read("proc-sys-net/ipv6/conf/eth9/accept_ra"),
        "1",
        "only the uplink's accept_ra is changed"
    );
    assert_eq!(
        stdout_lines(&out),
        [
            IPV4_TURNED_ON.to_owned(),
            format!(
                "enable-forwarding: net.ipv6.conf.{uplink}.accept_ra was 1; set it to 2, so \
                 that {uplink} keeps taking router advertisements"
            ),
            IPV6_TURNED_ON.to_owned(),
        ]
    );

    // Again: forwarding is on, and a router that forwarded already is left as it is.
    node.write(&accept_ra, "1\n");
    let again = node.run(script, &env);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        stdout_lines(&again),
        [
            IPV4_ON,
            "enable-forwarding: net.ipv6.conf.all.forwarding is on"
        ]
    );
    assert_eq!(node.read(&accept_ra), "1");

    // An uplink that takes no router advertisements (accept_ra 0) keeps it so.
    node.write(forwarding, "0\n");
    node.write(&accept_ra, "0\n");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read(forwarding), "1");
    assert_eq!(node.read(&accept_ra), "0");
    assert_eq!(
        stdout_lines(&out),
        [IPV4_ON, IPV6_TURNED_ON],
        "no word about accept_ra"
    );

    // An uplink the host does not have: said so before forwarding is turned on.
    node.write(forwarding, "0\n");
    let mut wrong_uplink = env.clone();
    wrong_uplink.insert("HOSTGW_UPLINK".to_owned(), "nosuch0".to_owned());
    let out = node.run(script, &wrong_uplink);
    assert!(!out.status.success(), "a missing uplink was accepted");
    assert_eq!(stderr_lines(&out), [NO_UPLINK]);
    assert_eq!(node.read(forwarding), "0");
}

#[test]
fn enable_forwarding_leaves_ipv6_alone_where_told_or_disabled() {
    let manifests = Manifests::load();
    let env = container_env(manifests.init_container("enable-forwarding"), &manifests);
    let uplink = &env["HOSTGW_UPLINK"];
    let accept_ra = format!("proc-sys-net/ipv6/conf/{uplink}/accept_ra");
    let forwarding = "proc-sys-net/ipv6/conf/all/forwarding";
    let script = manifests.script("enable-forwarding.sh");
    let node = FakeNode::new("forwarding-v6-off", uplink);
    node.with_ipv6(&[(uplink, "1")]);

    // A value other than auto or never: refused before anything is written.
    let mut bad = env.clone();
    bad.insert("HOSTGW_IPV6_FORWARDING".to_owned(), "yes".to_owned());
    let out = node.run(script, &bad);
    assert!(
        !out.status.success(),
        "HOSTGW_IPV6_FORWARDING=yes was accepted"
    );
    assert_eq!(
        stderr_lines(&out),
        ["enable-forwarding: HOSTGW_IPV6_FORWARDING=yes: expected auto or never"]
    );
    assert_eq!(node.read("proc-sys-net/ipv4/ip_forward"), "0");
    assert_eq!(node.read(forwarding), "0");

    // never: IPv4 on, IPv6 left alone.
    let mut never = env.clone();
    never.insert("HOSTGW_IPV6_FORWARDING".to_owned(), "never".to_owned());
    let out = node.run(script, &never);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read("proc-sys-net/ipv4/ip_forward"), "1");
    assert_eq!(node.read(forwarding), "0");
    assert_eq!(node.read(&accept_ra), "1");
    assert_eq!(
        stdout_lines(&out).last().map(String::as_str),
        Some(
            "enable-forwarding: HOSTGW_IPV6_FORWARDING=never: leaving \
             net.ipv6.conf.all.forwarding alone"
        )
    );

    // IPv6 disabled on the host (net.ipv6.conf.all.disable_ipv6 = 1): left alone.
    node.write("proc-sys-net/ipv6/conf/all/disable_ipv6", "1\n");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.read(forwarding), "0");
    assert_eq!(node.read(&accept_ra), "1");
    assert_eq!(
        stdout_lines(&out),
        [
            IPV4_ON,
            "enable-forwarding: IPv6 is disabled (net.ipv6.conf.all.disable_ipv6 = 1): leaving \
             net.ipv6.conf.all.forwarding alone"
        ]
    );

    // No IPv6 at all (ipv6.disable=1 on the kernel command line): no net.ipv6 to write.
    fs::remove_dir_all(node.path("proc-sys-net/ipv6")).expect("removing net.ipv6");
    let out = node.run(script, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_lines(&out), [IPV4_ON, NO_IPV6]);
    assert!(!node.path("proc-sys-net/ipv6").exists());
}
