//! Broker processes on loopback: started, killed, paused, resumed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a broker may take to exit after SIGTERM before it is killed.
const STOP_WAIT_MS: u64 = 10_000;

/// One broker: its process while it runs.
struct Broker {
    id: u64,
    data_dir: PathBuf,
    client_port: u16,
    child: Option<Child>,
    paused: bool,
}

/// A cluster of `weir broker` processes on 127.0.0.1.
pub struct Cluster {
    weir: PathBuf,
    peers: String,
    brokers: Vec<Broker>,
    log_dir: PathBuf,
}

impl Cluster {
    /// Starts `n` brokers with data under `dir`; broker i listens for
    /// clients on `base_port + 10 * (i - 1)` and for peers on the next port.
    pub fn start(weir: &Path, n: u64, dir: &Path, base_port: u16) -> Result<Cluster, String> {
        let port = |i: u64| base_port + 10 * (i as u16 - 1);
        let peers = (1..=n)
            .map(|i| format!("{i}=127.0.0.1:{}", port(i) + 1))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = (1..=n)
            .map(|id| Broker {
                id,
                data_dir: dir.join(format!("broker-{id}")),
                client_port: port(id),
                child: None,
                paused: false,
            })
            .collect();
        let mut cluster = Cluster {
            weir: weir.to_path_buf(),
            peers,
            brokers,
            log_dir: dir.to_path_buf(),
        };
        for id in 1..=n {
            cluster.launch(id)?;
        }
        Ok(cluster)
    }

    /// host:port of every broker's client listener.
    pub fn bootstrap(&self) -> Vec<String> {
        self.brokers
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.client_port))
            .collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.brokers.iter().map(|b| b.id).collect()
    }

    fn broker(&mut self, id: u64) -> Result<&mut Broker, String> {
        self.brokers
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or_else(|| format!("no broker {id}"))
    }

    /// Starts broker `id` on its data directory, if it is not running.
    pub fn launch(&mut self, id: u64) -> Result<(), String> {
        let weir = self.weir.clone();
        let peers = self.peers.clone();
        let log = self.log_dir.join(format!("broker-{id}.log"));
        let b = self.broker(id)?;
        if b.child.is_some() {
            return Ok(());
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let child = Command::new(&weir)
            .arg("broker")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&b.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", b.client_port)])
            .args(["--peer-listen", &format!("127.0.0.1:{}", b.client_port + 1)])
            .args(["--peers", &peers, "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", weir.display()))?;
        b.child = Some(child);
        b.paused = false;
        Ok(())
    }

    /// SIGKILL: the process dies at once (what it wrote but did not fsync
    /// stays in the page cache, as on a process crash).
    pub fn kill(&mut self, id: u64) -> Result<(), String> {
        let b = self.broker(id)?;
        if let Some(mut child) = b.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        b.paused = false;
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `STOP_WAIT_MS`.
    pub fn stop(&mut self, id: u64) -> Result<(), String> {
        self.resume(id)?;
        let b = self.broker(id)?;
        let Some(mut child) = b.child.take() else {
            return Ok(());
        };
        signal(child.id(), "TERM")?;
        for _ in 0..STOP_WAIT_MS / 50 {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// SIGSTOP: the process is frozen; its connections stay open.
    pub fn pause(&mut self, id: u64) -> Result<(), String> {
        let b = self.broker(id)?;
        if let Some(child) = &b.child {
            signal(child.id(), "STOP")?;
            b.paused = true;
        }
        Ok(())
    }

    /// SIGCONT for a paused broker.
    pub fn resume(&mut self, id: u64) -> Result<(), String> {
        let b = self.broker(id)?;
        if let (Some(child), true) = (&b.child, b.paused) {
            signal(child.id(), "CONT")?;
            b.paused = false;
        }
        Ok(())
    }

    /// Deletes broker `id`'s data directory (it must be stopped): the
    /// destructive fault, outside what replication promises to survive.
    pub fn wipe(&mut self, id: u64) -> Result<(), String> {
        let b = self.broker(id)?;
        if b.child.is_some() {
            return Err(format!("broker {id} is running; stop it before wiping"));
        }
        match std::fs::remove_dir_all(&b.data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", b.data_dir.display())),
        }
    }

    /// The last `lines` lines of every broker's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for b in &self.brokers {
            let path = self.log_dir.join(format!("broker-{}.log", b.id));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            let state = if b.child.is_some() {
                "launched"
            } else {
                "stopped"
            };
            out.push_str(&format!(
                "\n--- broker {} ({state}), {}:\n{tail}",
                b.id,
                path.display()
            ));
        }
        out
    }

    /// Every broker running and not paused.
    pub fn heal(&mut self) -> Result<(), String> {
        for id in self.ids() {
            self.resume(id)?;
            self.launch(id)?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.kill(id);
        }
    }
}

fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("cannot run kill -{name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid} failed: {status}"))
    }
}
