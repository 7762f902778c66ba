//! Typed access to the maps the agent writes: the route tries and endpoint tables of both
//! families and the node state. The free functions read a map however it was opened (loaded
//! with the programs, or from its pin by the inspection commands), so both read the same way.

use std::{collections::BTreeMap, net::IpAddr};

use hostgw_common::{Endpoint, RouteV4, RouteV6, names};
use ipnet::IpNet;

use super::{Dataplane, DataplaneError, map_error};
use crate::model::{Family, TrieRoute};

impl Dataplane {
    /// The node state the programs read.
    pub fn state(&self) -> Result<hostgw_common::State, DataplaneError> {
        let array: aya::maps::Array<_, hostgw_common::State> =
            aya::maps::Array::try_from(self.map(names::STATE)?)
                .map_err(|e| map_error(names::STATE, e))?;
        array.get(&0, 0).map_err(|e| map_error(names::STATE, e))
    }

    /// Writes the node state the programs read (forwarding on or off).
    pub fn set_state(&mut self, state: hostgw_common::State) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(names::STATE)
            .ok_or(DataplaneError::MissingMap(names::STATE))?;
        let mut array: aya::maps::Array<_, hostgw_common::State> =
            aya::maps::Array::try_from(map).map_err(|e| map_error(names::STATE, e))?;
        array
            .set(0, state, 0)
            .map_err(|e| map_error(names::STATE, e))
    }

    /// The route tries' entries, both families.
    pub fn trie(&self) -> Result<BTreeMap<IpNet, TrieRoute>, DataplaneError> {
        let mut out = BTreeMap::new();
        for family in Family::ALL {
            let name = trie_map(family);
            out.extend(read_trie(self.map(name)?, family).map_err(|e| map_error(name, e))?);
        }
        Ok(out)
    }

    /// Adds or replaces a route trie entry in the trie of `cidr`'s family.
    pub fn put_trie(&mut self, cidr: IpNet, route: TrieRoute) -> Result<(), DataplaneError> {
        let name = trie_map(Family::of_net(cidr));
        let mismatch = || DataplaneError::FamilyMismatch {
            cidr,
            node_ip: route.node_ip,
        };
        match cidr {
            IpNet::V4(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 4], RouteV4> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                let key =
                    aya::maps::lpm_trie::Key::new(u32::from(c.prefix_len()), c.network().octets());
                trie.insert(&key, route.to_v4().ok_or_else(mismatch)?, 0)
            }
            IpNet::V6(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 16], RouteV6> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                let key =
                    aya::maps::lpm_trie::Key::new(u32::from(c.prefix_len()), c.network().octets());
                trie.insert(&key, route.to_v6().ok_or_else(mismatch)?, 0)
            }
        }
        .map_err(|e| map_error(name, e))
    }

    /// Removes a route trie entry; a missing one is not an error.
    pub fn delete_trie(&mut self, cidr: IpNet) -> Result<(), DataplaneError> {
        let name = trie_map(Family::of_net(cidr));
        let removed = match cidr {
            IpNet::V4(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 4], RouteV4> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                trie.remove(&aya::maps::lpm_trie::Key::new(
                    u32::from(c.prefix_len()),
                    c.network().octets(),
                ))
            }
            IpNet::V6(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 16], RouteV6> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                trie.remove(&aya::maps::lpm_trie::Key::new(
                    u32::from(c.prefix_len()),
                    c.network().octets(),
                ))
            }
        };
        match removed {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other.map_err(|e| map_error(name, e)),
        }
    }

    /// The endpoint tables' entries, both families.
    pub fn endpoints(&self) -> Result<BTreeMap<IpAddr, Endpoint>, DataplaneError> {
        let mut out = BTreeMap::new();
        for family in Family::ALL {
            let name = endpoint_map(family);
            out.extend(read_endpoints(self.map(name)?, family).map_err(|e| map_error(name, e))?);
        }
        Ok(out)
    }

    /// Adds or replaces an endpoint in the table of `ip`'s family.
    pub fn put_endpoint(&mut self, ip: IpAddr, ep: Endpoint) -> Result<(), DataplaneError> {
        let name = endpoint_map(Family::of(ip));
        match ip {
            IpAddr::V4(a) => {
                aya::maps::HashMap::<_, [u8; 4], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.insert(a.octets(), ep, 0))
            }
            IpAddr::V6(a) => {
                aya::maps::HashMap::<_, [u8; 16], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.insert(a.octets(), ep, 0))
            }
        }
        .map_err(|e| map_error(name, e))
    }

    /// Removes an endpoint; a missing one is not an error.
    pub fn delete_endpoint(&mut self, ip: IpAddr) -> Result<(), DataplaneError> {
        let name = endpoint_map(Family::of(ip));
        let removed = match ip {
            IpAddr::V4(a) => {
                aya::maps::HashMap::<_, [u8; 4], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.remove(&a.octets()))
            }
            IpAddr::V6(a) => {
                aya::maps::HashMap::<_, [u8; 16], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.remove(&a.octets()))
            }
        };
        match removed {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other.map_err(|e| map_error(name, e)),
        }
    }

    /// The `HOOKS` map's entries: interface index → `HOOK_F_*`.
    pub fn hooks(&self) -> Result<BTreeMap<u32, u32>, DataplaneError> {
        read_hooks(self.map(names::HOOKS)?).map_err(|e| map_error(names::HOOKS, e))
    }

    /// Sets the `HOOK_F_*` flags of an interface.
    pub fn set_hook(&mut self, ifindex: u32, flags: u32) -> Result<(), DataplaneError> {
        aya::maps::HashMap::<_, u32, u32>::try_from(self.map_mut(names::HOOKS)?)
            .and_then(|mut m| m.insert(ifindex, flags, 0))
            .map_err(|e| map_error(names::HOOKS, e))
    }

    /// Clears an interface's flags; a missing entry is not an error.
    pub fn delete_hook(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match aya::maps::HashMap::<_, u32, u32>::try_from(self.map_mut(names::HOOKS)?)
            .and_then(|mut m| m.remove(&ifindex))
        {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other.map_err(|e| map_error(names::HOOKS, e)),
        }
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }
}

/// The entries of the `HOOKS` map (as loaded, or opened from its pin).
pub fn read_hooks(map: &aya::maps::Map) -> Result<BTreeMap<u32, u32>, aya::maps::MapError> {
    let hooks: aya::maps::HashMap<_, u32, u32> = aya::maps::HashMap::try_from(map)?;
    hooks.iter().collect()
}

/// The route trie map of `family`.
pub fn trie_map(family: Family) -> &'static str {
    match family {
        Family::V4 => names::ROUTES_V4,
        Family::V6 => names::ROUTES_V6,
    }
}

/// The endpoint map of `family`.
pub fn endpoint_map(family: Family) -> &'static str {
    match family {
        Family::V4 => names::ENDPOINTS_V4,
        Family::V6 => names::ENDPOINTS_V6,
    }
}

/// The entries of a route trie map of `family` (as loaded, or opened from its pin). A key
/// whose prefix is longer than the address cannot be inserted, so is never found.
pub fn read_trie(
    map: &aya::maps::Map,
    family: Family,
) -> Result<Vec<(IpNet, TrieRoute)>, aya::maps::MapError> {
    let mut out = Vec::new();
    match family {
        Family::V4 => {
            let trie: aya::maps::LpmTrie<_, [u8; 4], RouteV4> = aya::maps::LpmTrie::try_from(map)?;
            for entry in &trie {
                let (key, route) = entry?;
                if let Ok(net) = IpNet::new(IpAddr::from(key.data()), key.prefix_len() as u8) {
                    out.push((net, route.into()));
                }
            }
        }
        Family::V6 => {
            let trie: aya::maps::LpmTrie<_, [u8; 16], RouteV6> = aya::maps::LpmTrie::try_from(map)?;
            for entry in &trie {
                let (key, route) = entry?;
                if let Ok(net) = IpNet::new(IpAddr::from(key.data()), key.prefix_len() as u8) {
                    out.push((net, route.into()));
                }
            }
        }
    }
    Ok(out)
}

/// The entries of an endpoint map of `family` (as loaded, or opened from its pin).
pub fn read_endpoints(
    map: &aya::maps::Map,
    family: Family,
) -> Result<Vec<(IpAddr, Endpoint)>, aya::maps::MapError> {
    match family {
        Family::V4 => aya::maps::HashMap::<_, [u8; 4], Endpoint>::try_from(map)?
            .iter()
            .map(|e| e.map(|(k, v)| (IpAddr::from(k), v)))
            .collect(),
        Family::V6 => aya::maps::HashMap::<_, [u8; 16], Endpoint>::try_from(map)?
            .iter()
            .map(|e| e.map(|(k, v)| (IpAddr::from(k), v)))
            .collect(),
    }
}
