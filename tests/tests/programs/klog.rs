//! The programs' log records: they reach userspace through aya-log, and the per-CPU budget
//! in the eBPF crate (`hostgw-ebpf/src/prog/log.rs`) limits them. The test runs on one pinned
//! CPU, so one budget is in play.

use std::time::{Duration, Instant};

use hostgw_common::{CONFIG_F_FIB_FALLBACK, STATE_F_CT_GATE, STATE_F_FORWARD_V4};
use hostgw_tests::pin_to_cpu;

use crate::harness::{Prog, Programs, TC_ACT_UNSPEC, egress_frame};
use crate::world::inside;

/// Records one CPU may emit at once (`BURST` in `hostgw-ebpf/src/prog/log.rs`).
const BURST: usize = 10;
/// One more record per this much time (`REFILL_NS` there).
const REFILL: Duration = Duration::from_millis(100);

/// The CPU the calling thread runs on now.
fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu)
        .unwrap_or_else(|_| panic!("sched_getcpu: {}", std::io::Error::last_os_error()))
}

/// Collects `log` records.
#[derive(Default, Clone)]
struct Records(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

/// The programs' log records reach userspace through aya-log, and the kernel side limits them:
/// a flood of failing conntrack lookups (made to fail here with a wrong options size) yields
/// one CPU's burst of records, not one per packet. The budget is per CPU, so the test thread
/// is pinned to one CPU and every run draws on that CPU's budget: a fresh budget holds
/// [`BURST`] records and gains one per [`REFILL`], so the runs may log at most `BURST` plus one
/// per `REFILL` they took, and log at least `BURST`.
#[test]
fn kernel_log_records_are_rate_limited() {
    inside("klog", |world| {
        // The thread `inside` runs this on ends with the test: the pin goes with it.
        let cpu = current_cpu();
        pin_to_cpu(0, cpu).unwrap_or_else(|e| panic!("pinning the test thread to CPU {cpu}: {e}"));
        let mut cfg = world.config(CONFIG_F_FIB_FALLBACK);
        cfg.ct_opts_size = 8; // the kernel answers EINVAL
        let mut progs = Programs::load_with(world, cfg);
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_CT_GATE);
        let records = Records::default();
        let mut logger = aya_log::EbpfLogger::init_with_logger(&mut progs.ebpf, records.clone())
            .expect("the object has a log buffer");
        let runs = 200;
        let start = Instant::now();
        for _ in 0..runs {
            let got = progs.run(Prog::Egress, &egress_frame().bytes(), world.port, 0);
            assert_eq!(
                got.map(|g| g.0),
                Some(TC_ACT_UNSPEC),
                "a failed lookup passes the packet"
            );
        }
        let elapsed = start.elapsed();
        assert_eq!(
            current_cpu(),
            cpu,
            "the test thread left CPU {cpu} it was pinned to"
        );
        logger.flush();
        let got = records.0.lock().unwrap().clone();
        println!(
            "{} records for {runs} failed lookups on CPU {cpu} in {elapsed:?}: {:?}",
            got.len(),
            got.first()
        );
        assert!(
            got.iter()
                .all(|r| r.starts_with("WARN conntrack lookup failed with error -22")),
            "{got:?}"
        );
        let refills = usize::try_from(elapsed.as_nanos() / REFILL.as_nanos())
            .expect("a test run's refills fit usize");
        let bound = BURST + refills;
        assert!(
            bound < runs,
            "the {runs} runs took {elapsed:?}: too slow for a budget of {BURST} plus one per \
             {REFILL:?} to show"
        );
        assert!(
            got.len() >= BURST,
            "{} records for {runs} failed lookups: a fresh budget lets {BURST} through",
            got.len()
        );
        assert!(
            got.len() <= bound,
            "{} records for {runs} failed lookups in {elapsed:?} on one CPU: the kernel did not \
             limit them to {bound} ({BURST} + {refills} refills)",
            got.len()
        );
    });
}
