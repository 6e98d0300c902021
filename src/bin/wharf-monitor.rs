//! `wharf-monitor`: the small process beside each container that collects its exit
//! and writes its output (see `wharf::runtime::monitor_main`). Started by wharf only.

fn main() {
    std::process::exit(wharf::runtime::monitor_main());
}
