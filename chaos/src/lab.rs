//! The test bed: each node in its own Linux network namespace, joined to the harness by a veth pair on
//! a bridge, its data directory on a size-limited tmpfs of its own; and the `cairn serve` processes.
//!
//! Network partitions are real packet loss: a blackhole route in each namespace towards the other
//! (packets to the peer are dropped by the kernel; established connections stall until they time out,
//! as they do behind a failed switch). Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and `ip` (iproute2).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// Runs a command and fails with its stderr when it does.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Network namespaces on a bridge: node `i` (0-based) is `10.<a>.<b>.(i+1)`, the harness `.254`.
pub struct Lab {
    tag: String,
    prefix: String,
    nodes: usize,
    mounts: Vec<PathBuf>,
}

impl Lab {
    /// Creates the bridge and `nodes` namespaces. Leftovers of runs whose process is gone are removed
    /// first.
    pub fn create(nodes: usize) -> anyhow::Result<Self> {
        clean_stale();
        let pid = std::process::id();
        let tag = format!("{pid}");
        let prefix = format!("10.{}.{}", 200 + (pid / 250) % 50, pid % 250);
        let lab = Self {
            tag,
            prefix,
            nodes,
            mounts: Vec::new(),
        };
        let bridge = lab.bridge();
        sh("ip", &["link", "add", &bridge, "type", "bridge"]).context(
            "creating a bridge (the chaos harness needs root and iproute2: it puts each node in a \
             network namespace)",
        )?;
        sh(
            "ip",
            &["addr", "add", &format!("{}/24", lab.host_ip()), "dev", &bridge],
        )?;
        sh("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let ns = lab.ns(i);
            let veth = format!("cv{}n{i}", lab.tag);
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", lab.ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn bridge(&self) -> String {
        format!("cbr{}", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("cairnchaos-{}-{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 1)
    }

    /// The harness's address on the bridge (servers the nodes reach, as the object store, bind here).
    pub fn host_ip(&self) -> String {
        format!("{}.254", self.prefix)
    }

    /// Drops every packet between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        sh(
            "ip",
            &["-n", &self.ns(a), "route", "add", "blackhole", &self.ip(b)],
        )?;
        sh(
            "ip",
            &["-n", &self.ns(b), "route", "add", "blackhole", &self.ip(a)],
        )
    }

    /// Restores the link between `a` and `b`.
    pub fn mend(&self, a: usize, b: usize) -> anyhow::Result<()> {
        sh(
            "ip",
            &["-n", &self.ns(a), "route", "del", "blackhole", &self.ip(b)],
        )?;
        sh(
            "ip",
            &["-n", &self.ns(b), "route", "del", "blackhole", &self.ip(a)],
        )
    }

    /// Mounts a tmpfs of `mib` MiB at `dir` (created), unmounted when the lab is dropped.
    pub fn small_disk(&mut self, dir: &Path, mib: u32) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display().to_string();
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", &d],
        )?;
        self.mounts.push(dir.to_path_buf());
        Ok(())
    }

    /// A command run in node `i`'s namespace.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = sh("umount", &["-l", &m.display().to_string()]);
        }
        for i in 0..self.nodes {
            let _ = sh("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = sh("ip", &["link", "del", &self.bridge()]);
    }
}

/// Removes namespaces and bridges of earlier runs whose process no longer exists.
fn clean_stale() {
    let alive = |pid: &str| Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(rest) = name.strip_prefix("cairnchaos-")
                && let Some((pid, _)) = rest.split_once('-')
                && !alive(pid)
            {
                let _ = sh("ip", &["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            if let Some(pid) = name.strip_prefix("cbr")
                && pid.chars().all(|c| c.is_ascii_digit())
                && !alive(pid)
            {
                let _ = sh("ip", &["link", "del", name]);
            }
        }
    }
}

/// A running `cairn serve` (its pid is the process's own: `ip netns exec` execs it).
pub struct Proc {
    child: Child,
    gone: bool,
}

impl Proc {
    /// Starts `cmd serve --config CONFIG`, its stderr appended to `log`, and waits for its startup line.
    pub fn start(mut cmd: Command, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = cmd
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_CHAOS_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("cairn serving: ") {
                    let _ = tx.send(());
                }
            }
        });
        let mut proc = Self { child, gone: false };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = proc.child.try_wait()?;
            proc.kill();
            anyhow::bail!(
                "cairn serve did not start (exit {status:?}); its log is {}",
                log.display()
            );
        }
        Ok(proc)
    }

    /// Sends `signal` (`STOP`, `CONT`, …).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        sh("kill", &[&format!("-{signal}"), &self.child.id().to_string()])
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.gone |= status.is_some();
        status
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        if self.gone {
            return;
        }
        let _ = self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.gone = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
