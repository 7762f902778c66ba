//! The desired state from node lists: every skip reason, overlaps, families, annotations.

use super::*;

fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Item {
    Item::Node(NodeInfo {
        name: name.into(),
        pod_cidrs: cidrs.iter().map(|s| (*s).to_owned()).collect(),
        internal_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
    })
}

fn local() -> Local {
    Local {
        node_name: "me".into(),
        uplink_addrs: vec!["172.20.11.43/24".parse().unwrap()],
        ..Local::default()
    }
}

/// An uplink with both families: IPv4, a ULA /64 and the usual link-local /64.
fn local_dual() -> Local {
    Local {
        node_name: "me".into(),
        uplink_addrs: ["172.20.11.43/24", "fd00:20::43/64", "fe80::43/64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        ..Local::default()
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn route(node: &str, via: &str) -> Remote {
    Remote {
        node: node.into(),
        via: via.parse().unwrap(),
    }
}

fn reasons(d: &Desired) -> Vec<(String, &'static str)> {
    d.skipped
        .iter()
        .map(|s| (s.node.clone(), s.reason.kind()))
        .collect()
}

fn family_reasons(d: &Desired) -> Vec<(String, Option<Family>, &'static str)> {
    let mut v: Vec<_> = d
        .skipped
        .iter()
        .map(|s| (s.node.clone(), s.family, s.reason.kind()))
        .collect();
    v.sort();
    v
}

#[test]
fn own_cidr_is_local_others_are_routes() {
    let d = desired(
        &[
            node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
            node("b", &["10.1.27.0/24"], &["172.20.11.42"]),
            node("c", &["10.1.28.0/24"], &["fd00::1", "172.20.11.44"]),
        ],
        &local(),
    );
    assert_eq!(d.local_cidrs, vec![net("10.1.79.0/24")]);
    assert_eq!(
        d.routes,
        BTreeMap::from([
            (net("10.1.27.0/24"), route("b", "172.20.11.42")),
            (net("10.1.28.0/24"), route("c", "172.20.11.44")),
        ])
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert!(d.has_local(Family::V4) && !d.has_local(Family::V6));
}

#[test]
fn pod_cidrs_fall_back_to_every_listed_network() {
    let d = desired(
        &[node(
            "b",
            &["10.1.27.0/24", "10.2.27.0/24"],
            &["172.20.11.42"],
        )],
        &local(),
    );
    assert_eq!(d.routes.len(), 2);
    assert!(d.local_cidrs.is_empty(), "this node is not in the list");
}

#[test]
fn each_bad_node_is_skipped_with_its_reason() {
    let d = desired(
        &[
            node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
            node("nocidr", &[], &["172.20.11.50"]),
            node("badcidr", &["10.1.300.0/24"], &["172.20.11.52"]),
            node("hostbits", &["10.1.53.7/24"], &["172.20.11.53"]),
            node("noip", &["10.1.54.0/24"], &[]),
            node("badip", &["10.1.55.0/24"], &["172.20.11.x"]),
            node("offlink", &["10.1.56.0/24"], &["192.168.7.1"]),
            node("mine", &["10.1.57.0/24"], &["172.20.11.43"]),
            node("overlapsme", &["10.1.0.0/16"], &["172.20.11.58"]),
            node("good", &["10.1.27.0/24"], &["172.20.11.42"]),
            node("overlapsgood", &["10.1.27.128/25"], &["172.20.11.59"]),
            node("dup", &["10.1.60.0/24"], &["172.20.11.60"]),
            node("dup", &["10.1.61.0/24"], &["172.20.11.61"]),
            Item::Malformed {
                name: "broken".into(),
                error: "`spec.podCIDRs`: invalid type".into(),
            },
        ],
        &local(),
    );
    assert_eq!(
        d.routes,
        BTreeMap::from([(net("10.1.27.0/24"), route("good", "172.20.11.42"))])
    );
    let v4 = Some(Family::V4);
    let mut want: Vec<(String, Option<Family>, &str)> = [
        ("nocidr", v4, "no_pod_cidr"),
        ("badcidr", v4, "malformed_cidr"),
        ("hostbits", v4, "malformed_cidr"),
        ("noip", v4, "no_internal_ip"),
        ("badip", v4, "malformed_address"),
        ("offlink", v4, "not_on_link"),
        ("mine", v4, "address_is_ours"),
        ("overlapsme", v4, "overlap"),
        ("overlapsgood", v4, "overlap"),
        ("dup", None, "duplicate_name"),
        ("dup", None, "duplicate_name"),
        ("broken", None, "malformed_object"),
    ]
    .iter()
    .map(|(n, f, r)| ((*n).to_owned(), *f, *r))
    .collect();
    want.sort();
    assert_eq!(
        family_reasons(&d),
        want,
        "an IPv4-only cluster has no IPv6 skips"
    );
    let overlap = d.skipped.iter().find(|s| s.node == "overlapsgood").unwrap();
    assert_eq!(
        overlap.reason.to_string(),
        "pod CIDR 10.1.27.128/25 overlaps node good's"
    );
}

#[test]
fn taken_finds_every_kind_of_overlap() {
    let mut t = Taken::default();
    t.insert(net("10.1.27.0/24"), "a");
    t.insert(net("10.1.29.0/24"), "b");
    t.insert(net("fd00:10:27::/64"), "c");
    // Contained in one, containing one or several (the earliest given wins), equal.
    assert_eq!(t.overlapping(net("10.1.27.128/25")), Some("a"));
    assert_eq!(t.overlapping(net("10.1.24.0/22")), Some("a"));
    assert_eq!(t.overlapping(net("10.1.28.0/22")), Some("b"));
    assert_eq!(t.overlapping(net("10.1.29.0/24")), Some("b"));
    assert_eq!(t.overlapping(net("10.0.0.0/8")), Some("a"));
    assert_eq!(t.overlapping(net("fd00:10:27::/48")), Some("c"));
    assert_eq!(t.overlapping(net("fd00:10:27:0:8000::/65")), Some("c"));
    // Neighbours and the other family do not overlap.
    assert_eq!(t.overlapping(net("10.1.28.0/24")), None);
    assert_eq!(t.overlapping(net("10.1.26.0/24")), None);
    assert_eq!(t.overlapping(net("10.1.30.0/23")), None);
    assert_eq!(t.overlapping(net("fd00:10:28::/64")), None);
    assert_eq!(t.overlapping(net("::/0")), Some("c"));
    // A CIDR overlapping one already given out is not recorded again.
    t.insert(net("10.1.0.0/16"), "d");
    assert_eq!(t.overlapping(net("10.1.200.0/24")), None);
}

#[test]
fn overlap_winner_does_not_depend_on_file_order() {
    let a = node(
        "a",
        &["10.1.27.0/24", "fd00:10:27::/64"],
        &["172.20.11.42", "fd00:20::42"],
    );
    let b = node(
        "b",
        &["10.1.27.0/25", "fd00:10:27::/80"],
        &["172.20.11.44", "fd00:20::44"],
    );
    let d1 = desired(&[a.clone(), b.clone()], &local_dual());
    let d2 = desired(&[b, a], &local_dual());
    assert_eq!(d1, d2);
    assert_eq!(d1.routes.len(), 2);
    assert!(d1.routes.values().all(|r| r.node == "a"), "{:?}", d1.routes);
    assert_eq!(
        family_reasons(&d1),
        vec![
            ("b".to_owned(), Some(Family::V4), "overlap"),
            ("b".to_owned(), Some(Family::V6), "overlap"),
        ]
    );
}

#[test]
fn without_uplink_addresses_nothing_is_on_link() {
    let l = Local {
        node_name: "me".into(),
        uplink_addrs: vec![],
        ..Local::default()
    };
    let d = desired(&[node("b", &["10.1.27.0/24"], &["172.20.11.42"])], &l);
    assert!(d.routes.is_empty());
    assert_eq!(reasons(&d), vec![("b".to_owned(), "not_on_link")]);
}

#[test]
fn dual_stack_nodes_get_a_route_per_family() {
    let d = desired(
        &[
            node(
                "me",
                &["10.1.79.0/24", "fd00:10:79::/64"],
                &["172.20.11.43", "fd00:20::43"],
            ),
            node(
                "b",
                &["fd00:10:27::/64", "10.1.27.0/24"],
                &["fd00:20::42", "172.20.11.42"],
            ),
        ],
        &local_dual(),
    );
    assert_eq!(
        d.local_cidrs,
        vec![net("10.1.79.0/24"), net("fd00:10:79::/64")]
    );
    assert!(d.has_local(Family::V6));
    assert_eq!(
        d.routes,
        BTreeMap::from([
            (net("10.1.27.0/24"), route("b", "172.20.11.42")),
            (net("fd00:10:27::/64"), route("b", "fd00:20::42")),
        ])
    );
    assert_eq!((d.routes_of(Family::V4), d.routes_of(Family::V6)), (1, 1));
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
}

#[test]
fn a_family_a_node_lacks_is_skipped_for_that_node_only() {
    let d = desired(
        &[
            node(
                "me",
                &["10.1.79.0/24", "fd00:10:79::/64"],
                &["172.20.11.43"],
            ),
            // IPv4 only in a dual-stack cluster.
            node("v4only", &["10.1.27.0/24"], &["172.20.11.42"]),
            // IPv6 only.
            node("v6only", &["fd00:10:28::/64"], &["fd00:20::44"]),
            // Both CIDRs, but only an IPv4 address.
            node(
                "noip6",
                &["10.1.29.0/24", "fd00:10:29::/64"],
                &["172.20.11.45"],
            ),
        ],
        &local_dual(),
    );
    assert_eq!(
        d.routes,
        BTreeMap::from([
            (net("10.1.27.0/24"), route("v4only", "172.20.11.42")),
            (net("10.1.29.0/24"), route("noip6", "172.20.11.45")),
            (net("fd00:10:28::/64"), route("v6only", "fd00:20::44")),
        ])
    );
    let (v4, v6) = (Some(Family::V4), Some(Family::V6));
    assert_eq!(
        family_reasons(&d),
        vec![
            ("noip6".to_owned(), v6, "no_internal_ip"),
            ("v4only".to_owned(), v6, "no_pod_cidr"),
            ("v6only".to_owned(), v4, "no_pod_cidr"),
        ]
    );
    let s = d.skipped.iter().find(|s| s.node == "v4only").unwrap();
    assert_eq!(s.family_label(), "ipv6");
}

#[test]
fn a_v6_only_cluster_reports_nothing_about_ipv4() {
    let d = desired(
        &[
            node("me", &["fd00:10:79::/64"], &["fd00:20::43"]),
            node("b", &["fd00:10:27::/64"], &["fd00:20::42"]),
        ],
        &local_dual(),
    );
    assert_eq!(d.local_cidrs, vec![net("fd00:10:79::/64")]);
    assert_eq!(
        d.routes,
        BTreeMap::from([(net("fd00:10:27::/64"), route("b", "fd00:20::42"))])
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
}

#[test]
fn a_broken_ipv6_side_leaves_ipv4_working_and_the_other_way_round() {
    let d = desired(
        &[
            node("me", &["10.1.79.0/24", "fd00:10:79::/64"], &[]),
            node(
                "badcidr6",
                &["10.1.27.0/24", "fd00:10:zz::/64"],
                &["172.20.11.42", "fd00:20::42"],
            ),
            node(
                "hostbits6",
                &["10.1.28.0/24", "fd00:10:28::1/64"],
                &["172.20.11.44", "fd00:20::44"],
            ),
            node(
                "badip6",
                &["10.1.29.0/24", "fd00:10:29::/64"],
                &["172.20.11.45", "fd00:20::zz"],
            ),
            node(
                "offlink6",
                &["10.1.30.0/24", "fd00:10:30::/64"],
                &["172.20.11.46", "fd00:99::46"],
            ),
            node(
                "linklocal6",
                &["10.1.31.0/24", "fd00:10:31::/64"],
                &["172.20.11.47", "fe80::47"],
            ),
            node(
                "mine6",
                &["10.1.32.0/24", "fd00:10:32::/64"],
                &["172.20.11.48", "fd00:20::43"],
            ),
            node(
                "overlap6",
                &["10.1.33.0/24", "fd00:10:79::/48"],
                &["172.20.11.49", "fd00:20::49"],
            ),
            node(
                "badcidr4",
                &["10.1.300.0/24", "fd00:10:34::/64"],
                &["172.20.11.50", "fd00:20::50"],
            ),
            node(
                "offlink4",
                &["10.1.35.0/24", "fd00:10:35::/64"],
                &["10.99.0.1", "fd00:20::51"],
            ),
        ],
        &local_dual(),
    );
    let v4_routes: BTreeSet<String> = d
        .routes
        .iter()
        .filter(|(c, _)| Family::of_net(**c) == Family::V4)
        .map(|(_, r)| r.node.clone())
        .collect();
    let v6_routes: BTreeSet<String> = d
        .routes
        .iter()
        .filter(|(c, _)| Family::of_net(**c) == Family::V6)
        .map(|(_, r)| r.node.clone())
        .collect();
    assert_eq!(
        v4_routes,
        [
            "badcidr6",
            "hostbits6",
            "badip6",
            "offlink6",
            "linklocal6",
            "mine6",
            "overlap6"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(v6_routes, ["badcidr4", "offlink4"].map(String::from).into());
    let (v4, v6) = (Some(Family::V4), Some(Family::V6));
    assert_eq!(
        family_reasons(&d),
        vec![
            ("badcidr4".to_owned(), v4, "malformed_cidr"),
            ("badcidr6".to_owned(), v6, "malformed_cidr"),
            ("badip6".to_owned(), v6, "malformed_address"),
            ("hostbits6".to_owned(), v6, "malformed_cidr"),
            ("linklocal6".to_owned(), v6, "not_on_link"),
            ("mine6".to_owned(), v6, "address_is_ours"),
            ("offlink4".to_owned(), v4, "not_on_link"),
            ("offlink6".to_owned(), v6, "not_on_link"),
            ("overlap6".to_owned(), v6, "overlap"),
        ]
    );
    let ll = d.skipped.iter().find(|s| s.node == "linklocal6").unwrap();
    assert!(
        ll.reason.to_string().contains("link-local"),
        "{}",
        ll.reason
    );
}

#[test]
fn the_uplinks_link_local_subnet_does_not_make_a_node_on_link() {
    // Only link-local IPv6 on the uplink: no IPv6 next hop is on-link.
    let l = Local {
        node_name: "me".into(),
        uplink_addrs: vec![net("172.20.11.43/24"), net("fe80::43/64")],
        ..Local::default()
    };
    let d = desired(
        &[node(
            "b",
            &["10.1.27.0/24", "fd00:10:27::/64"],
            &["172.20.11.42", "fe80::42"],
        )],
        &l,
    );
    assert_eq!(d.routes.len(), 1);
    assert_eq!(
        family_reasons(&d),
        vec![("b".to_owned(), Some(Family::V6), "not_on_link")]
    );
}

#[test]
fn this_node_lacking_a_family_in_use_is_reported() {
    let d = desired(
        &[
            node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
            node(
                "b",
                &["10.1.27.0/24", "fd00:10:27::/64"],
                &["172.20.11.42", "fd00:20::42"],
            ),
        ],
        &local_dual(),
    );
    assert_eq!(
        d.routes.len(),
        2,
        "remote routes do not depend on our CIDRs"
    );
    assert_eq!(
        family_reasons(&d),
        vec![("me".to_owned(), Some(Family::V6), "no_pod_cidr")]
    );
}

#[test]
fn a_cluster_without_any_pod_cidr_reports_ipv4() {
    let d = desired(&[node("b", &[], &["172.20.11.42"])], &local());
    assert_eq!(
        family_reasons(&d),
        vec![("b".to_owned(), Some(Family::V4), "no_pod_cidr")]
    );
}

#[test]
fn family_of_text_follows_the_colon() {
    assert_eq!(Family::of_text("fd00::zz"), Family::V6);
    assert_eq!(Family::of_text("10.1.300.0/24"), Family::V4);
    assert_eq!(Family::of_text("garbage"), Family::V4);
}

#[test]
fn a_public_ipv6_annotation_is_the_ipv6_next_hop() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: b
    annotations:
      flannel.alpha.coreos.com/public-ip: 172.20.11.99
      flannel.alpha.coreos.com/public-ipv6: 'fd00:20::99'
  spec: {podCIDRs: [10.1.27.0/24, 'fd00:10:27::/64']}
  status:
    addresses:
    - {type: InternalIP, address: 172.20.11.42}
    - {type: InternalIP, address: 'fd00:99::42'}
";
    let items = crate::source::nodes::parse(
        std::path::Path::new("nodes.yaml"),
        text,
        crate::source::nodes::DEFAULT_ANNOTATION_PREFIX,
    )
    .expect("parses");
    let d = desired(&items, &local_dual());
    // The off-link InternalIPs are replaced, per family, by the annotated addresses.
    assert_eq!(
        d.routes,
        BTreeMap::from([
            (net("10.1.27.0/24"), route("b", "172.20.11.99")),
            (net("fd00:10:27::/64"), route("b", "fd00:20::99")),
        ])
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
}

/// Node objects are not trusted: a pod CIDR that would take traffic the node needs elsewhere
/// is refused, named, and the other nodes keep their routes.
#[test]
fn pod_cidrs_no_pod_network_can_have_are_refused() {
    let good = node("good", &["10.1.27.0/24"], &["172.20.11.42"]);
    for (cidr, kind) in [
        // The metadata service's address: a hijack of every pod's cloud credentials.
        ("169.254.169.254/32", "reserved_cidr"),
        ("0.0.0.0/0", "reserved_cidr"),
        ("0.0.0.0/8", "reserved_cidr"),
        ("127.0.0.0/8", "reserved_cidr"),
        ("224.0.0.0/24", "reserved_cidr"),
        ("::/0", "reserved_cidr"),
        ("::1/128", "reserved_cidr"),
        ("fe80::/64", "reserved_cidr"),
        ("ff05::/64", "reserved_cidr"),
        ("::ffff:10.1.0.0/120", "reserved_cidr"),
        // The uplink's subnet, a part of it, and a range around it.
        ("172.20.11.0/24", "node_network"),
        ("172.20.11.128/25", "node_network"),
        ("172.20.0.0/16", "node_network"),
        ("fd00:20::/64", "node_network"),
    ] {
        let bad = node("bad", &[cidr], &["172.20.11.44", "fd00:20::44"]);
        let d = desired(&[good.clone(), bad], &local_dual());
        let family = Family::of_net(net(cidr));
        assert!(
            d.skipped
                .iter()
                .any(|s| s.node == "bad" && s.family == Some(family) && s.reason.kind() == kind),
            "{cidr}: {:?}",
            d.skipped
        );
        assert!(
            !d.routes.contains_key(&net(cidr)),
            "{cidr} was routed: {:?}",
            d.routes
        );
        assert_eq!(
            d.routes.get(&net("10.1.27.0/24")),
            Some(&route("good", "172.20.11.42")),
            "{cidr}: the good node lost its route"
        );
    }
}

/// `--cluster-cidr` limits where a family's pod CIDRs may be; `--service-cidr` is never one.
#[test]
fn cluster_and_service_cidrs_limit_the_pod_cidrs() {
    let l = Local {
        cluster_cidrs: vec![net("10.1.0.0/16")],
        service_cidrs: vec![net("10.96.0.0/12"), net("fd00:96::/108")],
        ..local_dual()
    };
    let d = desired(
        &[
            node(
                "a",
                &["10.1.27.0/24", "fd00:10:27::/64"],
                &["172.20.11.42", "fd00:20::42"],
            ),
            node("b", &["10.2.0.0/24"], &["172.20.11.44"]),
            node(
                "c",
                &["10.1.28.0/24", "fd00:96::/112"],
                &["172.20.11.45", "fd00:20::45"],
            ),
        ],
        &l,
    );
    assert_eq!(
        family_reasons(&d),
        vec![
            ("b".to_owned(), Some(Family::V4), "outside_cluster_cidr"),
            ("b".to_owned(), Some(Family::V6), "no_pod_cidr"),
            ("c".to_owned(), Some(Family::V6), "service_cidr"),
        ]
    );
    // No IPv6 cluster CIDR: an IPv6 pod CIDR may be anywhere not refused anyway.
    assert_eq!(
        d.routes.keys().copied().collect::<Vec<_>>(),
        vec![
            net("10.1.27.0/24"),
            net("10.1.28.0/24"),
            net("fd00:10:27::/64")
        ]
    );
    // The service range, even inside the cluster CIDR.
    let l = Local {
        cluster_cidrs: vec![net("10.0.0.0/8")],
        ..l
    };
    let d = desired(&[node("s", &["10.96.1.0/24"], &["172.20.11.46"])], &l);
    assert_eq!(reasons(&d), vec![("s".to_owned(), "service_cidr")]);
    // Messages name the CIDR and what it would take.
    let skip = &d.skipped[0];
    assert_eq!(
        skip.reason.to_string(),
        "pod CIDR 10.96.1.0/24 overlaps the service CIDR 10.96.0.0/12"
    );
}
