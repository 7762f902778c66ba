//! The programs' log records: they reach userspace through aya-log, and the per-CPU budget
//! in the eBPF crate (`hostgw-ebpf/src/prog/log.rs`) limits them.

use hostgw_common::{CONFIG_F_FIB_FALLBACK, STATE_F_CT_GATE, STATE_F_FORWARD_V4};

use crate::harness::{Prog, Programs, TC_ACT_OK, egress_frame};
use crate::world::inside;

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
/// a flood of failing conntrack lookups (made to fail here with a wrong options size) yields a
/// burst of at most ten records per CPU, not one per packet.
#[test]
fn kernel_log_records_are_rate_limited() {
    inside("klog", |world| {
        let mut cfg = world.config(CONFIG_F_FIB_FALLBACK);
        cfg.ct_opts_size = 8; // the kernel answers EINVAL
        let mut progs = Programs::load_with(world, cfg);
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_CT_GATE);
        let records = Records::default();
        let mut logger = aya_log::EbpfLogger::init_with_logger(&mut progs.ebpf, records.clone())
            .expect("the object has a log buffer");
        // Each CPU the runs land on has its own budget, refilled by one every 100 ms.
        let runs = 200;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            let got = progs.run(Prog::Egress, &egress_frame().bytes(), world.port, 0);
            assert_eq!(
                got.map(|g| g.0),
                Some(TC_ACT_OK),
                "a failed lookup passes the packet"
            );
        }
        logger.flush();
        let got = records.0.lock().unwrap().clone();
        println!(
            "{} records for {runs} failed lookups: {:?}",
            got.len(),
            got.first()
        );
        assert!(!got.is_empty(), "no log record reached userspace");
        assert!(
            got.iter()
                .all(|r| r.starts_with("WARN conntrack lookup failed with error -22")),
            "{got:?}"
        );
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let refills = (start.elapsed().as_millis() / 100) as usize + 1;
        assert!(
            got.len() <= (10 + refills) * cpus,
            "{} records for {runs} lookups: the kernel did not limit them",
            got.len()
        );
    });
}
