//! The control runtime: a small single-threaded tokio runtime on its own
//! thread for admin and control traffic (the admin listener, the policy and
//! report streams, the telemetry aggregator), so that a flood on the data
//! path cannot starve `/ready`, `/metrics` or policy updates. ztunnel splits
//! its runtimes the same way.

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

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
    fn start_can_be_spawned() {
        fn is_send<T: Send>(_: &T) {}
        use clap::Parser;
        let args = crate::Args::try_parse_from(["vigil-proxy", "--workload", "w"]).unwrap();
        let start = crate::start(args);
        is_send(&start);
    }
}
