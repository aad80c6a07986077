//! The sidecar's runtimes. The data path's ([`data_runtime`]) is sized to
//! the CPUs the process may use: on one CPU (a pinned sidecar, a pod limited
//! to one core) a single-threaded runtime, which serves a request and its
//! upstream exchange with no work stealing or cross-thread wake-ups, as
//! nginx's and haproxy's single event loops do. The control runtime
//! ([`ControlRuntime`]) is a small single-threaded runtime on its own thread
//! for admin and control traffic (the admin listener, the policy and report
//! streams, the telemetry aggregator), so that a flood on the data path
//! cannot starve `/ready`, `/metrics` or policy updates. ztunnel splits its
//! runtimes the same way.

use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How many data-path threads `--worker-threads` asks for: `requested`, or
/// when 0, the CPUs this process may use.
pub fn worker_threads(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// The most threads the data path runs blocking work on: the system
/// resolver's lookups (`getaddrinfo`, for destinations named by the
/// notebook), which queue beyond it.
///
/// tokio's default is 512. Each lookup a cache miss starts takes a thread
/// until it returns, so a notebook's burst of connections to names the
/// cache does not hold started one thread each: 32 connections at once
/// left 32 threads (0.6 MiB of RSS, 10 s until they exit), and a flood of
/// unique names that a silent nameserver keeps waiting could hold 512
/// threads (their stacks: 1 GiB of address space). Eight threads keep that
/// bounded; a slow nameserver delays only the notebook's own lookups.
pub const MAX_BLOCKING_THREADS: usize = 8;

/// The data path's runtime: single-threaded for one worker thread, else
/// multi-threaded with that many workers; at most
/// [`MAX_BLOCKING_THREADS`] for blocking work.
pub fn data_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers <= 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// How often the data path's timer heartbeat fires (see
/// [`spawn_timer_heartbeat`]): well under the shortest per-request timer
/// (`--header-read-timeout-ms`, 10 s by default).
pub const TIMER_HEARTBEAT: Duration = Duration::from_millis(500);

/// Keeps a timer armed on the current runtime (the data path's), firing
/// every [`TIMER_HEARTBEAT`], until `shutdown` turns true.
///
/// Every HTTP/1.1 request arms a timer: hyper's header-read timeout for the
/// connection's next request. When tokio's timer has nothing armed that
/// expires sooner, arming one wakes the runtime's own event loop through
/// its eventfd (a `write` and an extra `epoll_wait`), since the loop may be
/// asleep with no timeout: `strace -c` under `wrk -c32` counted 4,610 such
/// writes for 5,116 requests on a fresh sidecar, 436 for 6,915 on one that
/// had served a while, 37 with the heartbeat. With a timer always due
/// within half a second, a new 10-second timer is never the earliest and
/// arming it costs no system call. The heartbeat itself costs two
/// wake-ups a second.
pub fn spawn_timer_heartbeat(mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TIMER_HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    })
}

/// The runtime's thread and a way to stop it.
#[derive(Debug)]
pub struct ControlRuntime {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ControlRuntime {
    /// Starts the runtime on a thread named `vigil-control`.
    pub fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vigil-control".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime here cancels whatever is left on it.
            })?;
        Ok(Self {
            handle,
            stop,
            thread,
        })
    }

    /// The handle to spawn onto (or `enter`, so that `tokio::spawn` and
    /// socket registration use this runtime).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime and waits for its thread.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn tasks_run_on_the_control_thread() {
        let rt = ControlRuntime::start().unwrap();
        let name = rt
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("vigil-control"));
        rt.stop().await;
    }

    #[test]
    fn worker_threads_follow_the_flag_or_the_cpus() {
        assert_eq!(worker_threads(3), 3);
        assert_eq!(worker_threads(1), 1);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(worker_threads(0), cpus);
    }

    /// A burst of blocking work (the system resolver's lookups) queues on
    /// at most [`MAX_BLOCKING_THREADS`] threads instead of starting one
    /// thread per lookup.
    #[test]
    fn blocking_work_runs_on_a_bounded_number_of_threads() {
        use std::collections::HashSet;
        use std::sync::{Arc, Mutex};
        let runtime = data_runtime(1).unwrap();
        let threads = Arc::new(Mutex::new(HashSet::new()));
        runtime.block_on(async {
            let lookups: Vec<_> = (0..4 * MAX_BLOCKING_THREADS)
                .map(|_| {
                    let threads = threads.clone();
                    tokio::task::spawn_blocking(move || {
                        threads.lock().unwrap().insert(std::thread::current().id());
                        // A lookup a slow nameserver keeps waiting.
                        std::thread::sleep(Duration::from_millis(20));
                    })
                })
                .collect();
            for lookup in lookups {
                lookup.await.unwrap();
            }
        });
        let used = threads.lock().unwrap().len();
        assert!(
            (1..=MAX_BLOCKING_THREADS).contains(&used),
            "{used} threads for {} lookups",
            4 * MAX_BLOCKING_THREADS
        );
    }

    #[test]
    fn one_worker_is_a_single_threaded_runtime() {
        use tokio::runtime::RuntimeFlavor;
        let one = data_runtime(1).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = data_runtime(2).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        // The sidecar starts and serves on the single-threaded one.
        use clap::Parser;
        let args = crate::Args::try_parse_from([
            "vigil-proxy",
            "--workload",
            "w",
            "--outbound-addr",
            "127.0.0.1:0",
            "--inbound-addr",
            "127.0.0.1:0",
            "--inbound-addr6",
            "off",
            "--outbound-addr6",
            "off",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        one.block_on(async {
            let running = crate::start(args).await.unwrap();
            running.shutdown().await;
        });
    }

    #[test]
    fn start_can_be_spawned() {
        fn is_send<T: Send>(_: &T) {}
        use clap::Parser;
        let args = crate::Args::try_parse_from(["vigil-proxy", "--workload", "w"]).unwrap();
        let start = crate::start(args);
        is_send(&start);
    }
}
