//! CPU time of this process's threads, read from /proc (Linux), so the benchmark can charge
//! the services' threads and leave out the load generator's own.

/// Thread-name prefix of the load generator's runtime: its CPU is not the services'.
pub const LOAD_THREAD_PREFIX: &str = "bench-load";

/// Seconds of CPU (user + system) used so far by this process's threads, split into
/// (services and everything else, load generator).
pub fn cpu_seconds() -> (f64, f64) {
    let ticks = clock_ticks_per_second();
    let mut services = 0.0;
    let mut load = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ppid …": comm may contain spaces; fields after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the comm.
        let used = fields
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        if comm.starts_with(LOAD_THREAD_PREFIX) {
            load += used / ticks;
        } else {
            services += used / ticks;
        }
    }
    // Threads that exited are no longer listed; the process total still counts them.
    let total = process_cpu_seconds(ticks);
    let services = services.max(total - load);
    (services, load)
}

fn process_cpu_seconds(ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(11) + get(12)) / ticks
}

fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}
