//! `weft-bench wakeup`: what one sleep and wake-up costs on this machine.
//!
//! At a fixed request rate a proxy sleeps between events and is woken for each: a request in,
//! its response back. On bare metal a wake-up costs a few microseconds of CPU; on a virtual
//! machine (an idle vCPU halts, and its wake-up goes through the hypervisor) it can cost ten
//! times that, and then it, not the proxy's own work, is most of the proxy CPU per request that
//! `bench/run` reports at fixed rates. This measures it with nothing else in the way: two threads
//! on the given CPUs pass one byte back and forth over two pipes, the caller pausing
//! `--gap-us` between round trips so both CPUs go idle as they do between requests. The echo
//! thread does, per round trip, exactly one sleep (a blocking read), one wake-up, one read and
//! one write; its CPU time per round trip is the figure. Its voluntary context switches are
//! counted too, to show each round trip really was a sleep. (Pipes, not a Unix socket pair: a
//! socket's reader is also woken when the peer frees what it sent, a second wake-up per round
//! trip that TCP, what the proxies use, does not have.)

use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CPU the caller runs on.
    #[arg(long, default_value_t = 1)]
    pub caller_cpu: usize,
    /// The CPU the echo thread (the one measured) runs on.
    #[arg(long, default_value_t = 0)]
    pub echo_cpu: usize,
    /// Round trips measured (after 10 % as many to warm up).
    #[arg(long, default_value_t = 5000)]
    pub round_trips: u32,
    /// The caller's pause between round trips, microseconds (0: back to back).
    #[arg(long, default_value_t = 200)]
    pub gap_us: u64,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Wakeup {
    /// The echo thread's CPU time per round trip (one sleep, one wake-up, a read and a write).
    pub echo_cpu_us: f64,
    /// The echo thread's voluntary context switches per round trip (1.0: it slept every time).
    pub echo_sleeps: f64,
    /// The caller's CPU time per round trip (its own write, sleeps and read, and its pause).
    pub caller_cpu_us: f64,
    /// Wall time per round trip, the pause included.
    pub wall_us: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let w = measure(&args)?;
    println!(
        "{}",
        serde_json::json!({
            "caller_cpu": args.caller_cpu,
            "echo_cpu": args.echo_cpu,
            "round_trips": args.round_trips,
            "gap_us": args.gap_us,
            "echo_cpu_us_per_wakeup": w.echo_cpu_us,
            "echo_sleeps_per_round_trip": w.echo_sleeps,
            "caller_cpu_us_per_round_trip": w.caller_cpu_us,
            "wall_us_per_round_trip": w.wall_us,
        })
    );
    Ok(())
}

pub fn measure(args: &Args) -> anyhow::Result<Wakeup> {
    anyhow::ensure!(args.round_trips > 0, "--round-trips must be at least 1");
    let (mut echo_in, mut caller_out) = std::io::pipe()?;
    let (mut caller_in, mut echo_out) = std::io::pipe()?;
    let warmup = (args.round_trips / 10).max(1);
    let total = warmup + args.round_trips;
    let echo_cpu = args.echo_cpu;
    let echo_thread = std::thread::spawn(move || -> anyhow::Result<(f64, f64)> {
        pin(echo_cpu)?;
        let mut byte = [0u8; 1];
        let mut start = None;
        for i in 0..total {
            if i == warmup {
                start = Some(thread_usage()?);
            }
            echo_in.read_exact(&mut byte)?;
            echo_out.write_all(&byte)?;
        }
        let (cpu0, switches0) = start.expect("warmup < total");
        let (cpu1, switches1) = thread_usage()?;
        Ok((cpu1 - cpu0, (switches1 - switches0) as f64))
    });
    pin(args.caller_cpu)?;
    let gap = Duration::from_micros(args.gap_us);
    let mut byte = [7u8; 1];
    let mut start = None;
    for i in 0..total {
        if i == warmup {
            start = Some((thread_usage()?.0, Instant::now()));
        }
        caller_out.write_all(&byte)?;
        caller_in.read_exact(&mut byte)?;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    let (cpu0, t0) = start.expect("warmup < total");
    let caller_cpu = thread_usage()?.0 - cpu0;
    let wall = t0.elapsed();
    let (echo_cpu, echo_switches) = echo_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    let n = f64::from(args.round_trips);
    Ok(Wakeup {
        echo_cpu_us: echo_cpu * 1e6 / n,
        echo_sleeps: echo_switches / n,
        caller_cpu_us: caller_cpu * 1e6 / n,
        wall_us: wall.as_secs_f64() * 1e6 / n,
    })
}

/// Runs the calling thread on `cpu` only.
fn pin(cpu: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        cpu < libc::CPU_SETSIZE as usize,
        "cannot run on CPU {cpu}: beyond CPU_SETSIZE"
    );
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only touch it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(
        rc == 0,
        "cannot run on CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// This thread's CPU seconds (user + system) and voluntary context switches so far.
fn thread_usage() -> anyhow::Result<(f64, i64)> {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    anyhow::ensure!(rc == 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((tv(usage.ru_utime) + tv(usage.ru_stime), usage.ru_nvcsw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_trip_is_one_sleep_of_the_echo_thread() {
        // Both threads on CPU 0 (there is always one), a pause between round trips: the echo
        // thread must block on each read, and the figures must be real measurements.
        let w = measure(&Args {
            caller_cpu: 0,
            echo_cpu: 0,
            round_trips: 300,
            gap_us: 100,
        })
        .unwrap();
        assert!(
            (0.9..=1.5).contains(&w.echo_sleeps),
            "the echo thread slept {} times per round trip",
            w.echo_sleeps
        );
        assert!(
            w.wall_us >= 100.0,
            "wall {} us with a 100 us pause",
            w.wall_us
        );
        assert!(w.echo_cpu_us > 0.0 && w.echo_cpu_us.is_finite(), "{w:?}");
    }

    #[test]
    fn a_cpu_that_does_not_exist_is_an_error() {
        let err = measure(&Args {
            caller_cpu: 1000,
            echo_cpu: 0,
            round_trips: 1,
            gap_us: 0,
        })
        .unwrap_err();
        assert!(err.to_string().contains("CPU 1000"), "{err}");
    }
}
