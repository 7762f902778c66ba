//! Program tests: the embedded programs run with `BPF_PROG_TEST_RUN` on crafted frames, inside
//! a throwaway network namespace that holds the interfaces, addresses and kernel routes the
//! programs consult (ifindexes, MTUs, the FIB).
//!
//! Each row of the decision table is a frame and the verdict it must get. A row checks the
//! program's return code, the output bytes (unchanged for a pass; for an IPv4 forward the MACs,
//! TTL − 1, an IPv4 checksum recomputed from scratch and every other byte unchanged; for an
//! IPv6 forward the MACs, hop limit − 1 and every other byte unchanged) and that exactly the
//! expected counter, of the frame's family, moved. A table checks every row, then fails
//! listing all the rows that failed. IPv4 and IPv6 each have their table. A randomized run
//! then checks 200,000 mutated frames of both families against a model of the same tables.
//!
//! Layout: `world` builds the namespace and names the addresses the rows use; `harness` loads
//! the programs, runs a frame and checks a row, and collects a table's failures; `v4` and
//! `v6` hold the per-family decision tables; `model` the randomized run against the model;
//! `gate` the conntrack-gate rows; `klog` the rate limit of the programs' log records.

mod csum;
mod gate;
mod harness;
mod klog;
mod model;
mod v4;
mod v6;
mod world;
