//! The domain types every concern shares: address families, interfaces, routes, neighbour
//! entries, route trie entries and the node facts the programs follow. Plain data only: this
//! module imports nothing of the crate, and nothing here talks to the kernel.

mod family;
mod net;
mod node;
mod trie;

pub use family::{Family, is_link_local};
pub use net::{Link, NeighState, Neighbour, Route, TcUsers};
pub use node::{ConntrackTimeouts, Forwarding, Netfilter};
pub use trie::TrieRoute;
