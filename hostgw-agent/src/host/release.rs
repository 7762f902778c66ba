//! The running kernel's release, and the oldest one the programs load on.
//!
//! The programs call `bpf_check_mtu` with an L3 length (Linux 5.12), `bpf_redirect_peer` and
//! `bpf_redirect_neigh` with a next hop (5.10); below 5.12 the verifier refuses them. The
//! agent checks this first, so that an old kernel gets a refusal that names what is missing
//! rather than a verifier log. Everything newer is optional and detected where it is used:
//! tcx links (6.6; clsact filters before), conntrack kfuncs (the conntrack gate), managed
//! neighbour entries (5.16; a one-off resolution request before).

use std::io;

/// The oldest kernel the programs load on.
pub const MINIMUM: (u32, u32) = (5, 12);

/// Why the agent refuses this kernel.
#[derive(Debug, thiserror::Error)]
#[error(
    "kernel {release} is older than {}.{}: the programs need bpf_check_mtu with an L3 length \
     (Linux 5.12), bpf_redirect_peer and bpf_redirect_neigh with a next hop (5.10)",
    MINIMUM.0,
    MINIMUM.1
)]
pub struct TooOld {
    pub release: String,
}

/// The release of the running kernel (`uname -r`).
pub fn running() -> io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned())
}

/// `(major, minor)` of a release such as `6.1.0-50-amd64` or `5.14.0-427.el9.x86_64`.
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuses a kernel older than [`MINIMUM`]; a release that does not parse is let through (the
/// verifier has the last word).
pub fn check(release: &str) -> Result<(), TooOld> {
    match version(release) {
        Some(v) if v < MINIMUM => Err(TooOld {
            release: release.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_kernels_are_refused_with_what_they_lack() {
        for old in [
            "5.10.0-30-amd64",
            "5.4.0-150-generic",
            "4.18.0-513.el8.x86_64",
        ] {
            let e = check(old).expect_err(old).to_string();
            assert!(
                e.starts_with(&format!("kernel {old} is older than 5.12")),
                "{e}"
            );
            assert!(e.contains("bpf_check_mtu"), "{e}");
        }
        for new in [
            "5.12.0",
            "5.14.0-427.el9.x86_64",
            "6.1.0-50-amd64",
            "6.12.118+deb12-amd64",
            "6.18.44-fc-v1147",
        ] {
            assert!(check(new).is_ok(), "{new}");
        }
        assert_eq!(version("6.12.118+deb12-amd64"), Some((6, 12)));
        assert_eq!(version("weird"), None);
        assert!(
            check("weird").is_ok(),
            "an unparsable release is left to the verifier"
        );
    }
}
