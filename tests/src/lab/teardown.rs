//! Teardown of a kept lab: finding and removing, by their exact name patterns, the agents,
//! namespaces, pin directories and scratch directory of a lab another process left up with
//! `Lab::keep`. Nothing else is matched.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::TERM_GRACE;

/// What [`teardown_kept`] found and removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub agents: Vec<u32>,
    pub namespaces: Vec<String>,
    pub paths: Vec<PathBuf>,
}

/// Whether `name` is `<prefix><digits>-<lab>-<suffix>`, with `suffix` one of the lab's kinds
/// (`sw`, `n<i>`, `n<i>p<j>`).
fn is_lab_object(name: &str, prefix: &str, lab: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let Some((pid, rest)) = rest.split_once('-') else {
        return false;
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(suffix) = rest.strip_prefix(lab).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    if suffix == "sw" {
        return true;
    }
    let Some(node) = suffix.strip_prefix('n') else {
        return false;
    };
    let (node, pod) = node
        .split_once('p')
        .map_or((node, None), |(n, p)| (n, Some(p)));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(node) && pod.is_none_or(digits)
}

/// Removes a lab left up with [`Lab::keep`] by another process: stops its agents (SIGTERM,
/// then SIGKILL), deletes its namespaces, pin directories and scratch directory. Matches only
/// names of the lab's exact pattern.
pub fn teardown_kept(lab: &str) -> Teardown {
    let mut done = Teardown::default();
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_lab_object(n, "hgw-", lab))
                .collect()
        })
        .unwrap_or_default();

    // Agents: hostgw-agent processes whose --netns is one of the lab's namespaces.
    let mut pids = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.filter_map(Result::ok) {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_agent = args.first().is_some_and(|a| a.ends_with("hostgw-agent"));
            let in_lab = args
                .windows(2)
                .any(|w| w[0] == "--netns" && namespaces.contains(&w[1]));
            if is_agent && in_lab {
                pids.push(pid);
            }
        }
    }
    for &pid in &pids {
        if let Ok(p) = i32::try_from(pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
    let start = Instant::now();
    while start.elapsed() < TERM_GRACE
        && pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in &pids {
        if Path::new(&format!("/proc/{pid}")).exists()
            && let Ok(p) = i32::try_from(pid)
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    done.agents = pids;

    for ns in namespaces {
        let ok = Command::new("ip")
            .args(["netns", "del", &ns])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            done.namespaces.push(ns);
        } else {
            eprintln!("warning: could not delete netns {ns}");
        }
    }

    let dirs = [
        (PathBuf::from("/sys/fs/bpf"), "hostgw-test-"),
        (std::env::temp_dir(), "hostgw-lab-"),
    ];
    for (parent, prefix) in dirs {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            // The scratch directory is `hostgw-lab-<pid>-<lab>`: give it a node-like suffix
            // to reuse the pattern.
            let matches = if prefix == "hostgw-lab-" {
                is_lab_object(&format!("{name}-sw"), prefix, lab)
            } else {
                is_lab_object(&name, prefix, lab)
            };
            if matches {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => done.paths.push(e.path()),
                    Err(err) => {
                        eprintln!("warning: could not remove {}: {err}", e.path().display());
                    }
                }
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_lab_objects_match_exactly() {
        assert!(is_lab_object("hgw-123-demo-sw", "hgw-", "demo"));
        assert!(is_lab_object("hgw-123-demo-n1", "hgw-", "demo"));
        assert!(is_lab_object("hgw-123-demo-n12p3", "hgw-", "demo"));
        assert!(is_lab_object(
            "hostgw-test-9-demo-n2",
            "hostgw-test-",
            "demo"
        ));
        assert!(!is_lab_object("hgw-123-demo2-n1", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-123-x-demo-n1", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-123-demo-n1x", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-abc-demo-n1", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-123-demo-attach", "hgw-", "demo"));
    }
}
