//! A long-running process inside a namespace: its output captured line by line (and awaitable),
//! killed on drop, and restartable with the same command.

use std::io::{BufRead as _, BufReader};
use std::os::fd::AsRawFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::{Error, Netns};

/// How long a process gets between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Appended to captured output when a run's stream ends (a line of its own).
const EXITED: &str = "[testbed: output closed]\n";

/// Builds the command again for each (re)start.
type Factory = Box<dyn Fn() -> Command + Send + Sync>;

/// A child process in a namespace. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Proc {
    name: String,
    netns: Arc<NetnsRef>,
    uid: Option<u32>,
    death_signal: i32,
    factory: Factory,
    child: Option<Child>,
    stdout: watch::Sender<String>,
    stderr: watch::Sender<String>,
}

/// The namespace's fd and name, kept by the process for restarts. (`Netns` itself stays with
/// its owner: the process must not keep the namespace's name alive.)
struct NetnsRef {
    fd: std::fs::File,
    name: String,
}

impl Proc {
    /// Starts `factory()` inside `netns` (as `uid` if given). `death_signal` is what the kernel
    /// sends it if the test thread dies first: SIGKILL for plain programs, SIGTERM for ones that
    /// must clean up after themselves (like `weft run`).
    pub fn spawn(
        name: &str,
        netns: &Netns,
        uid: Option<u32>,
        death_signal: i32,
        factory: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Result<Proc, Error> {
        let fd = netns
            .dup_fd()
            .map_err(|e| Error::io(format!("duplicating namespace {}", netns.name()), e))?;
        let mut proc = Proc {
            name: name.to_string(),
            netns: Arc::new(NetnsRef {
                fd,
                name: netns.name().to_string(),
            }),
            uid,
            death_signal,
            factory: Box::new(factory),
            child: None,
            stdout: watch::channel(String::new()).0,
            stderr: watch::channel(String::new()).0,
        };
        proc.start()?;
        Ok(proc)
    }

    fn start(&mut self) -> Result<(), Error> {
        let mut cmd = (self.factory)();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        weft_sys::on_exec(
            &mut cmd,
            weft_sys::ChildSetup {
                netns: Some(self.netns.fd.as_raw_fd()),
                uid: self.uid,
                death_signal: self.death_signal,
            },
        );
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {} in {}", self.name, self.netns.name), e))?;
        for (pipe, sink) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                self.stdout.clone(),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                self.stderr.clone(),
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.send_modify(|all| {
                        all.push_str(&line);
                        all.push('\n');
                    });
                }
                // End of output: the run exited (waiters stop waiting).
                sink.send_modify(|all| all.push_str(EXITED));
            });
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id of the current run, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything written to stdout so far (all runs).
    pub fn stdout(&self) -> String {
        self.stdout.borrow().clone()
    }

    /// Everything written to stderr so far (all runs).
    pub fn stderr(&self) -> String {
        self.stderr.borrow().clone()
    }

    /// Waits until a stdout line satisfies `pred` and returns it.
    pub async fn wait_stdout_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, Error> {
        wait_line(&self.stdout, timeout, pred)
            .await
            .map_err(|()| self.timeout_error("stdout line"))
    }

    /// Waits until a stderr line satisfies `pred` and returns it.
    pub async fn wait_stderr_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, Error> {
        wait_line(&self.stderr, timeout, pred)
            .await
            .map_err(|()| self.timeout_error("stderr line"))
    }

    fn timeout_error(&self, what: &str) -> Error {
        Error::Other(format!(
            "{}: expected {what} did not appear\n--- stdout\n{}--- stderr\n{}",
            self.name,
            self.stdout(),
            self.stderr()
        ))
    }

    /// Whether the current run has exited (and how).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped while we hold it.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Waits for the current run to exit, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it gracefully: SIGTERM, then SIGKILL after a grace period. Returns its status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on our unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("testbed: {} ignored SIGTERM; killing it", self.name);
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills the current run (if any) and starts the same command again.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.start()
    }
}

impl Proc {
    /// [`Proc::restart`], but first waits (at most `timeout`) until the killed run's stdout and
    /// stderr have been read to their end, so none of its output lands after the new run's.
    /// (Output then ends with the killed run's end marker, which ends a line wait at once: poll
    /// [`Proc::stdout`] for the new run's lines instead.)
    pub async fn restart_drained(&mut self, timeout: Duration) -> Result<(), Error> {
        let had_run = self.child.is_some();
        self.kill();
        // A dead run writes nothing more: its output is read to the end once both end with
        // the marker.
        let closed = |s: &watch::Sender<String>| s.borrow().ends_with(EXITED);
        let deadline = Instant::now() + timeout;
        while had_run
            && !(closed(&self.stdout) && closed(&self.stderr))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.start()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for a line of `sink` (all output so far, appended line by line) that satisfies `pred`,
/// until the output ends or `timeout`. Each line is tested once: a wake-up looks only at what
/// was appended since the last one.
async fn wait_line(
    sink: &watch::Sender<String>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<String, ()> {
    let mut rx = sink.subscribe();
    let mut scanned = 0;
    let mut found = None;
    let wait = rx.wait_for(|all| {
        // Appends are whole lines, so `scanned` always sits at a line start.
        found = all[scanned..].lines().find(|l| pred(l)).map(str::to_string);
        scanned = all.len();
        found.is_some() || all.ends_with(EXITED)
    });
    let ended = matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)));
    found.filter(|_| ended).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(sink: &watch::Sender<String>, line: &str) {
        sink.send_modify(|all| {
            all.push_str(line);
            all.push('\n');
        });
    }

    #[tokio::test]
    async fn wait_line_finds_lines_already_there_and_later_ones() {
        let sink = watch::channel(String::new()).0;
        append(&sink, "starting");
        append(&sink, "listening on 1");
        let got = wait_line(&sink, Duration::from_secs(5), |l| {
            l.starts_with("listening")
        });
        assert_eq!(got.await, Ok("listening on 1".to_string()));

        let later = {
            let sink = sink.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                append(&sink, "noise");
                append(&sink, "ready 2");
            })
        };
        let got = wait_line(&sink, Duration::from_secs(5), |l| l.starts_with("ready"));
        assert_eq!(got.await, Ok("ready 2".to_string()));
        later.await.expect("appender");
    }

    #[tokio::test]
    async fn wait_line_gives_up_when_the_output_ends_or_time_runs_out() {
        let sink = watch::channel(String::new()).0;
        append(&sink, "one");
        sink.send_modify(|all| all.push_str(EXITED));
        let got = wait_line(&sink, Duration::from_secs(5), |l| l == "two");
        assert_eq!(got.await, Err(()));

        let quiet = watch::channel(String::new()).0;
        let started = Instant::now();
        let got = wait_line(&quiet, Duration::from_millis(50), |l| l == "two");
        assert_eq!(got.await, Err(()));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
