//! A tshark capture on the loopback interface for the duration of a test step: started with a
//! capture filter, confirmed to be writing packets (it can say "Capturing on" before its filter
//! takes effect), stopped cleanly, read back as raw bytes to search for what must not be there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

use super::{eventually, set_pdeathsig, ChildProc, SOON};

pub struct Capture {
    proc: ChildProc,
    pub file: PathBuf,
}

impl Capture {
    /// Captures `filter` (a pcap filter, e.g. `tcp port 8086`) into `dir/name`, poking `poke`
    /// (plain connects, no payload; an address the filter covers) until packets are written.
    pub async fn start(
        tshark: &Path,
        filter: &str,
        dir: &Path,
        name: &str,
        poke: SocketAddr,
    ) -> Capture {
        let file = dir.join(name);
        let mut cmd = tokio::process::Command::new(tshark);
        cmd.args(["-i", "lo", "-f", filter, "-w"])
            .arg(&file)
            .args(["-a", "duration:60"]);
        set_pdeathsig(&mut cmd);
        let proc = ChildProc::spawn("tshark", cmd, dir);
        eventually("tshark is capturing", SOON, || async {
            proc.stderr_tail(4000)
                .contains("Capturing on")
                .then_some(())
        })
        .await;
        let header_len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        eventually("tshark writes captured packets", SOON, || async {
            drop(TcpStream::connect(poke).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            (len > header_len).then_some(())
        })
        .await;
        Capture { proc, file }
    }

    /// Lets the last segments be written, stops tshark and returns the capture file's bytes.
    pub async fn stop(mut self) -> Vec<u8> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.proc.signal(libc::SIGINT);
        assert!(
            self.proc.wait(Duration::from_secs(20)).await.is_some(),
            "tshark did not stop"
        );
        std::fs::read(&self.file).expect("read capture")
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
