//! Counters: what a node's fast path and kernel stack counted, read from the node's pinned
//! maps (`STATS`, the route tries) and from `/proc/net/snmp{,6}`. Reads only; nothing here
//! changes a map.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::maps::{LpmTrie, Map, MapData, PerCpuArray};
use hostgw_common::{
    Counter, RouteV4, RouteV6,
    counters::{self, family, hook, reason},
    names,
};

use super::{Family, Lab};
use crate::sh;

/// The reasons that mean "forwarded by the programs, not by the kernel's stack".
pub const FAST_REASONS: [u32; 5] = [
    reason::FAST_EGRESS,
    reason::FAST_INGRESS,
    reason::FAST_TRANSIT,
    reason::FIB_FORWARD,
    reason::NEIGH_REDIRECT,
];

/// Packets counted by a node's programs, summed over CPUs, per `(family, hook, reason)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    packets: Vec<u64>,
}

impl Counters {
    /// Packets at `(hook, reason)`, over every address family.
    pub fn get(&self, hook: u32, reason: u32) -> u64 {
        (0..family::COUNT)
            .map(|f| self.get_in(f, hook, reason))
            .sum()
    }

    /// Packets of `family` at `(hook, reason)`.
    pub fn get_in(&self, family: u32, hook: u32, reason: u32) -> u64 {
        self.packets[counters::index(family, hook, reason) as usize]
    }

    /// Packets with `reason`, over every hook and family.
    pub fn reason(&self, reason: u32) -> u64 {
        (0..family::COUNT).map(|f| self.reason_in(f, reason)).sum()
    }

    /// Packets of `family` with `reason`, over every hook.
    pub fn reason_in(&self, family: u32, reason: u32) -> u64 {
        (0..hook::COUNT)
            .map(|h| self.get_in(family, h, reason))
            .sum()
    }

    /// Packets forwarded by the programs: the [`FAST_REASONS`] over every hook and family.
    pub fn fast(&self) -> u64 {
        FAST_REASONS.iter().map(|&r| self.reason(r)).sum()
    }

    /// Packets of `family` forwarded by the programs.
    pub fn fast_in(&self, family: u32) -> u64 {
        FAST_REASONS
            .iter()
            .map(|&r| self.reason_in(family, r))
            .sum()
    }

    /// What grew since `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            packets: self
                .packets
                .iter()
                .zip(&earlier.packets)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// `(family name, hook name, reason name, packets)` for every non-zero counter.
    pub fn nonzero(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for f in 0..family::COUNT {
            for h in 0..hook::COUNT {
                for r in 0..reason::COUNT {
                    let n = self.get_in(f, h, r);
                    if n > 0 {
                        out.push((
                            family::NAMES[f as usize],
                            hook::NAMES[h as usize],
                            reason::NAMES[r as usize],
                            n,
                        ));
                    }
                }
            }
        }
        out
    }
}

/// An entry of a node's `ROUTES_V4` trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrieEntry {
    pub network: Ipv4Addr,
    pub prefix_len: u32,
    pub route: RouteV4,
}

impl TrieEntry {
    /// `a.b.c.d/len`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix_len)
    }
}

impl Lab {
    /// `Ip: ForwDatagrams` of node `i`: datagrams the kernel's stack forwarded.
    pub fn snmp_forwarded(&self, i: usize) -> u64 {
        let out = sh(self.node(i).ns().command("cat").arg("/proc/net/snmp"));
        let text = String::from_utf8_lossy(&out.stdout);
        parse_snmp(&text, "Ip", "ForwDatagrams")
            .unwrap_or_else(|| panic!("no Ip: ForwDatagrams in /proc/net/snmp of n{i}:\n{text}"))
    }

    /// Datagrams of `family` node `i`'s kernel stack forwarded: [`Lab::snmp_forwarded`] or
    /// [`Lab::snmp6_forwarded`].
    pub fn kernel_forwarded(&self, i: usize, family: Family) -> u64 {
        match family {
            Family::V4 => self.snmp_forwarded(i),
            Family::V6 => self.snmp6_forwarded(i),
        }
    }

    /// `Ip6OutForwDatagrams` of node `i`: IPv6 datagrams the kernel's stack forwarded.
    pub fn snmp6_forwarded(&self, i: usize) -> u64 {
        let out = sh(self.node(i).ns().command("cat").arg("/proc/net/snmp6"));
        let text = String::from_utf8_lossy(&out.stdout);
        parse_snmp6(&text, "Ip6OutForwDatagrams")
            .unwrap_or_else(|| panic!("no Ip6OutForwDatagrams in /proc/net/snmp6 of n{i}:\n{text}"))
    }

    fn pinned_map(&self, i: usize, map: &str) -> MapData {
        let path = self.node(i).pin_dir().join(map);
        MapData::from_pin(&path).unwrap_or_else(|e| {
            panic!(
                "cannot open {} (is an agent running on n{i}? the lab is {:?}): {e}",
                path.display(),
                self.mode
            )
        })
    }

    /// The flags of node `i`'s pinned `STATE` map (`STATE_F_*`).
    pub fn state_flags(&self, i: usize) -> u32 {
        self.state(i).flags
    }

    /// Node `i`'s pinned `STATE` value.
    pub fn state(&self, i: usize) -> hostgw_common::State {
        let map = Map::from_map_data(self.pinned_map(i, names::STATE))
            .unwrap_or_else(|e| panic!("STATE of n{i}: {e}"));
        let state: aya::maps::Array<MapData, hostgw_common::State> =
            aya::maps::Array::try_from(map)
                .unwrap_or_else(|e| panic!("STATE of n{i} is not an array: {e}"));
        state
            .get(&0, 0)
            .unwrap_or_else(|e| panic!("reading STATE of n{i}: {e}"))
    }

    /// Node `i`'s pinned `HOOKS` map: interface index → `HOOK_F_*`.
    pub fn hook_flags(&self, i: usize) -> BTreeMap<u32, u32> {
        let map = Map::from_map_data(self.pinned_map(i, names::HOOKS))
            .unwrap_or_else(|e| panic!("HOOKS of n{i}: {e}"));
        let hooks: aya::maps::HashMap<MapData, u32, u32> = aya::maps::HashMap::try_from(map)
            .unwrap_or_else(|e| panic!("HOOKS of n{i} is not a hash map: {e}"));
        hooks
            .iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("reading HOOKS of n{i}: {e}"))
    }

    /// The index of interface `dev` on node `i`.
    pub fn ifindex(&self, i: usize, dev: &str) -> u32 {
        let out = self.node(i).ns().ip(&["-j", "link", "show", "dev", dev]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip JSON");
        links[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no ifindex for {dev} on n{i}: {links}"))
    }

    /// The id of node `i`'s pinned map `map` (the same id means the same map).
    pub fn map_id(&self, i: usize, map: &str) -> u32 {
        self.pinned_map(i, map)
            .info()
            .unwrap_or_else(|e| panic!("map info of {map} on n{i}: {e}"))
            .id()
    }

    /// Node `i`'s program counters from the pinned `STATS` map, summed over CPUs.
    pub fn fast_path_counters(&self, i: usize) -> Counters {
        let map = Map::from_map_data(self.pinned_map(i, names::STATS))
            .unwrap_or_else(|e| panic!("STATS of n{i}: {e}"));
        let stats: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(map)
            .unwrap_or_else(|e| panic!("STATS of n{i} is not a per-CPU array: {e}"));
        let packets = (0..counters::STATS_LEN)
            .map(|idx| {
                stats
                    .get(&idx, 0)
                    .unwrap_or_else(|e| panic!("reading STATS[{idx}] of n{i}: {e}"))
                    .iter()
                    .map(|c| c.packets)
                    .sum()
            })
            .collect();
        Counters { packets }
    }

    /// Node `i`'s `ROUTES_V4` trie, from its pin.
    pub fn trie(&self, i: usize) -> Vec<TrieEntry> {
        let map = Map::from_map_data(self.pinned_map(i, names::ROUTES_V4))
            .unwrap_or_else(|e| panic!("ROUTES_V4 of n{i}: {e}"));
        let trie: LpmTrie<MapData, [u8; 4], RouteV4> = LpmTrie::try_from(map)
            .unwrap_or_else(|e| panic!("ROUTES_V4 of n{i} is not an LPM trie: {e}"));
        trie.iter()
            .map(|kv| {
                let (key, route) = kv.unwrap_or_else(|e| panic!("iterating ROUTES_V4: {e}"));
                TrieEntry {
                    network: Ipv4Addr::from(key.data()),
                    prefix_len: key.prefix_len(),
                    route,
                }
            })
            .collect()
    }

    /// Node `i`'s trie entry for `cidr` (`a.b.c.d/len`), if any.
    pub fn trie_entry(&self, i: usize, cidr: &str) -> Option<TrieEntry> {
        self.trie(i).into_iter().find(|e| e.cidr() == cidr)
    }

    /// Node `i`'s `ROUTES_V6` trie, from its pin: `CIDR → route`.
    pub fn trie6(&self, i: usize) -> BTreeMap<String, RouteV6> {
        let map = Map::from_map_data(self.pinned_map(i, names::ROUTES_V6))
            .unwrap_or_else(|e| panic!("ROUTES_V6 of n{i}: {e}"));
        let trie: LpmTrie<MapData, [u8; 16], RouteV6> = LpmTrie::try_from(map)
            .unwrap_or_else(|e| panic!("ROUTES_V6 of n{i} is not an LPM trie: {e}"));
        trie.iter()
            .map(|kv| {
                let (key, route) = kv.unwrap_or_else(|e| panic!("iterating ROUTES_V6: {e}"));
                let cidr = format!("{}/{}", Ipv6Addr::from(key.data()), key.prefix_len());
                (cidr, route)
            })
            .collect()
    }
}

/// The value of `field` on the `prefix:` lines of `/proc/net/snmp`.
pub fn parse_snmp(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let tag = format!("{prefix}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&tag));
    let header = lines.next()?;
    let values = lines.next()?;
    let pos = header.split_whitespace().position(|h| h == field)?;
    values.split_whitespace().nth(pos)?.parse().ok()
}

/// The value of `field` in `/proc/net/snmp6` (one `name value` pair per line).
pub fn parse_snmp6(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == field).then(|| words.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams\n\
                    Ip: 1 64 10 0 0 42\nIcmp: InMsgs\nIcmp: 3\n";
        assert_eq!(parse_snmp(snmp, "Ip", "ForwDatagrams"), Some(42));
        assert_eq!(parse_snmp(snmp, "Ip", "Nope"), None);
        let snmp6 = "Ip6InReceives                   \t12\nIp6OutForwDatagrams             \t7\n\
                     Ip6InDelivers                   \t5\n";
        assert_eq!(parse_snmp6(snmp6, "Ip6OutForwDatagrams"), Some(7));
        assert_eq!(parse_snmp6(snmp6, "Ip6Nope"), None);
    }
}
