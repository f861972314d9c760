//! The lab: two network namespaces (client, server) joined by a veth pair, inside the private namespace tree the
//! benchmark re-runs itself in (see `mod.rs`), and the processes under test in them.
//!
//! ```text
//!  bench-cli 10.244.0.1                                bench-srv 10.244.0.2
//!  load generator ─▶ 10.244.0.2:8080 ───────────────▶ app :8080                                  direct
//!                 ─▶ 10.96.0.10:80 (captured) podmesh ── mTLS ─▶ (captured) podmesh ─▶ app        podmesh
//!                 ─▶ 127.0.0.1:16001 nginx ────────── mTLS ─▶ :16006 nginx ─▶ 127.0.0.1:8080     nginx
//!                 ─▶ 127.0.0.1:16002 haproxy ──────── mTLS ─▶ :16007 haproxy ─▶ 127.0.0.1:8080   haproxy
//! ```
//!
//! Capture rules are installed only while the podmesh configuration runs: they take every TCP connection of a
//! namespace, so the other configurations' traffic would otherwise go through podmesh too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::loadgen::LoadResult;

pub const NS_CLI: &str = "bench-cli";
pub const NS_SRV: &str = "bench-srv";
pub const IP_SRV: &str = "10.244.0.2";
const IP_CLI: &str = "10.244.0.1";
/// The Service's ClusterIP and port in bench/manifests.
pub const CLUSTER_IP: &str = "10.96.0.10";
pub const P_APP: u16 = 8080;
pub const P_NGX_OUT: u16 = 16001;
pub const P_HAP_OUT: u16 = 16002;
pub const P_NGX_IN: u16 = 16006;
pub const P_HAP_IN: u16 = 16007;
/// The Host every configuration is called with: the Service's name, as a meshed client would use.
pub const HOST: &str = "server.bench";
/// The server name the nginx and HAProxy client sides verify (their peer certificate's DNS SAN).
pub const PEER_NAME: &str = "server.mesh.local";
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/client";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/bench/sa/server";
/// The app's response body, as in the shared harness.
pub const BODY_BYTES: u64 = 1024;

/// Linux reports CPU times in /proc in USER_HZ, which is 100 on every architecture it runs on today.
pub const CLK_TCK: f64 = 100.0;

const MANIFESTS: &str = include_str!("../../../../bench/manifests/bench.yaml");
const NGINX_APP: &str = include_str!("../../../../bench/peers/nginx-app.conf");
const NGINX_IN: &str = include_str!("../../../../bench/peers/nginx-in.conf");
const NGINX_OUT: &str = include_str!("../../../../bench/peers/nginx-out.conf");
const HAPROXY_IN: &str = include_str!("../../../../bench/peers/haproxy-in.cfg");
const HAPROXY_OUT: &str = include_str!("../../../../bench/peers/haproxy-out.cfg");

/// CPU lists for `taskset -c`.
#[derive(Debug, Clone)]
pub struct Pinning {
    pub loadgen: String,
    pub sut: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Nginx,
    Echo,
}

impl App {
    pub fn path(self) -> &'static str {
        match self {
            App::Nginx => "/",
            App::Echo => "/bytes/1024",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            App::Nginx => "nginx `return 200` with a 1 KiB body",
            App::Echo => "podmesh echo /bytes/1024 (a 1 KiB body)",
        }
    }
}

#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    err: PathBuf,
}

/// A running process under test, for CPU and memory sampling.
#[derive(Debug, Clone)]
pub struct Component {
    pub role: &'static str,
    pub pid: u32,
}

#[derive(Debug)]
pub struct Lab {
    pub dir: PathBuf,
    exe: PathBuf,
    pub pin: Option<Pinning>,
    workers: u32,
    procs: Vec<Proc>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The private PID namespace ends them anyway when the benchmark exits; this keeps a failed start tidy.
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.into_iter().rev().collect::<Vec<_>>().join("\n")
}

impl Lab {
    /// The namespaces and the veth pair. Must run inside the private namespace tree.
    pub fn up(dir: &Path, exe: &Path, pin: Option<Pinning>, workers: u32) -> Result<Lab> {
        for sub in ["logs", "pids", "tmp", "conf", "certs"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.display()))?;
        }
        // `ip netns add` bind-mounts under /run/netns: a tmpfs of our own keeps those mounts in our namespace.
        std::fs::create_dir_all("/run/netns").context("creating /run/netns")?;
        sh(&["mount", "-t", "tmpfs", "podmesh-bench", "/run/netns"])?;
        sh(&["ip", "link", "set", "lo", "up"])?;
        for ns in [NS_CLI, NS_SRV] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(&["ip", "link", "add", "vc", "netns", NS_CLI, "type", "veth", "peer", "name", "vs", "netns", NS_SRV])?;
        sh(&["ip", "-n", NS_CLI, "addr", "add", &format!("{IP_CLI}/24"), "dev", "vc"])?;
        sh(&["ip", "-n", NS_SRV, "addr", "add", &format!("{IP_SRV}/24"), "dev", "vs"])?;
        sh(&["ip", "-n", NS_CLI, "link", "set", "vc", "up"])?;
        sh(&["ip", "-n", NS_SRV, "link", "set", "vs", "up"])?;
        // The ClusterIP must be routable for a connect to start at all; the capture rules then take it.
        sh(&["ip", "-n", NS_CLI, "route", "add", "10.96.0.0/12", "dev", "vc"])?;
        Ok(Lab { dir: dir.to_path_buf(), exe: exe.to_path_buf(), pin, workers, procs: Vec::new() })
    }

    fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    fn podmesh(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running podmesh {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("podmesh {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The mesh CA and the workload certificates (`podmesh ca`), and the peers' certificates from the same root.
    pub fn make_certs(&self) -> Result<()> {
        let c = self.certs();
        let p = |s: &str| c.join(s).to_string_lossy().into_owned();
        self.podmesh(&["ca", "create", "--dir", &p("ca")])?;
        self.podmesh(&["ca", "issue", "--dir", &p("ca"), "--identity", CLIENT_ID, "--out", &p("client")])?;
        self.podmesh(&["ca", "issue", "--dir", &p("ca"), "--identity", SERVER_ID, "--out", &p("server")])?;
        // The nginx and HAProxy pairs. Their client side presents the podmesh client certificate as is (a SPIFFE
        // URI SAN only; both servers accept it: verification of a client certificate checks the chain, not
        // names). Their client side also verifies the server's name, which needs a DNS SAN that mesh
        // certificates do not carry, so the server side gets one issued here by the same root.
        let peer = c.join("peer");
        std::fs::create_dir_all(&peer).with_context(|| format!("creating {}", peer.display()))?;
        let root = read(&c.join("ca/root.pem"))?;
        let (server_pem, server_key) = peer_server_cert(&root, &read(&c.join("ca/root-key.pem"))?)?;
        let client_pem = read(&c.join("client/cert.pem"))?;
        let client_key = read(&c.join("client/key.pem"))?;
        write(&peer.join("ca.pem"), &root)?;
        write(&peer.join("server.pem"), &server_pem)?;
        write(&peer.join("server.key"), &server_key)?;
        write(&peer.join("server.bundle.pem"), &format!("{server_pem}{server_key}"))?;
        write(&peer.join("client.pem"), &client_pem)?;
        write(&peer.join("client.key"), &client_key)?;
        write(&peer.join("client.bundle.pem"), &format!("{client_pem}{client_key}"))?;
        Ok(())
    }

    /// The sidecars' configs, computed by `podmesh routes` from bench/manifests.
    pub fn make_configs(&self) -> Result<()> {
        let m = self.dir.join("manifests");
        std::fs::create_dir_all(&m).with_context(|| format!("creating {}", m.display()))?;
        write(&m.join("bench.yaml"), MANIFESTS)?;
        let m = m.to_string_lossy().into_owned();
        for side in ["client", "server"] {
            let json = self.podmesh(&["routes", "-f", &m, "--pod", &format!("bench/{side}"), "-o", "json"])?;
            write(&self.certs().join(side).join("config.json"), &json)?;
        }
        Ok(())
    }

    fn render(&self, template: &str, name: &str) -> Result<PathBuf> {
        let dir = self.dir.to_string_lossy();
        let certs = self.certs().join("peer");
        let body = "a".repeat(BODY_BYTES as usize);
        let text = template
            .replace("@RUN@", &dir)
            .replace("@CERTS@", &certs.to_string_lossy())
            .replace("@WORKERS@", &self.workers.to_string())
            .replace("@IP_SRV@", IP_SRV)
            .replace("@BODY@", &body)
            .replace("@P_APP@", &P_APP.to_string())
            .replace("@P_NGX_OUT@", &P_NGX_OUT.to_string())
            .replace("@P_NGX_IN@", &P_NGX_IN.to_string())
            .replace("@P_HAP_OUT@", &P_HAP_OUT.to_string())
            .replace("@P_HAP_IN@", &P_HAP_IN.to_string());
        let path = self.dir.join("conf").join(name);
        write(&path, &text)?;
        Ok(path)
    }

    /// `ip netns exec NS [taskset -c CPUS]`: the prefix of everything that runs in a namespace.
    fn in_ns(&self, ns: &str, cpus: Option<&str>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(cpus) = cpus {
            c.args(["taskset", "-c", cpus]);
        }
        c
    }

    fn sut(&self, ns: &str) -> Command {
        let mut c = self.in_ns(ns, self.pin.as_ref().map(|p| p.sut.as_str()));
        // One worker thread per process, like nginx's worker_processes and HAProxy's nbthread.
        c.env("TOKIO_WORKER_THREADS", self.workers.to_string());
        c
    }

    /// Starts a long-running process with its output in logs/NAME.{out,err}. `ip netns exec` and `taskset` exec
    /// the program, so the child's pid is the program's.
    fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<Component> {
        let out = self.dir.join("logs").join(format!("{name}.out"));
        let err = self.dir.join("logs").join(format!("{name}.err"));
        let file = |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
        cmd.stdin(Stdio::null()).stdout(file(&out)?).stderr(file(&err)?);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.procs.push(Proc { name: name.to_string(), child, err });
        Ok(Component { role: "", pid })
    }

    /// Stops and forgets these processes (a configuration that failed), so that [`Lab::alive`] stops watching them.
    pub fn retire(&mut self, names: &[&str]) {
        for p in self.procs.iter_mut().filter(|p| names.contains(&p.name.as_str())) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.retain(|p| !names.contains(&p.name.as_str()));
    }

    /// Fails when one of these processes, or the app, has exited (with its log), so a broken config shows at once.
    pub fn alive(&mut self, names: &[&str]) -> Result<()> {
        for p in self.procs.iter_mut().filter(|p| p.name == "app" || names.contains(&p.name.as_str())) {
            if let Some(status) = p.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", p.name, tail(&p.err, 15));
            }
        }
        Ok(())
    }

    /// Waits until `name`'s stderr shows `ready`.
    fn wait_log(&mut self, name: &str, ready: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let err = self.dir.join("logs").join(format!("{name}.err"));
        while !std::fs::read_to_string(&err).unwrap_or_default().contains(ready) {
            self.alive(&[name])?;
            if Instant::now() > deadline {
                bail!("{name} did not start: {}", tail(&err, 15));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn nginx(&mut self, ns: &str, name: &str, template: &str) -> Result<Component> {
        let conf = self.render(template, &format!("{name}.conf"))?;
        let mut cmd = self.sut(ns);
        cmd.arg("nginx").arg("-p").arg(&self.dir).arg("-c").arg(&conf);
        cmd.arg("-e").arg(self.dir.join("logs").join(format!("{name}.nginx-startup.err")));
        // In the foreground, so that it is our child and its processes are this pid's descendants.
        cmd.args(["-g", "daemon off;"]);
        self.spawn(name, cmd)
    }

    fn haproxy(&mut self, ns: &str, name: &str, template: &str) -> Result<Component> {
        let conf = self.render(template, &format!("{name}.cfg"))?;
        let mut cmd = self.sut(ns);
        // -db: stay in the foreground.
        cmd.args(["haproxy", "-db", "-f"]).arg(&conf);
        self.spawn(name, cmd)
    }

    pub fn start_app(&mut self, app: App) -> Result<Component> {
        let c = match app {
            App::Nginx => self.nginx(NS_SRV, "app", NGINX_APP)?,
            App::Echo => {
                let mut cmd = self.sut(NS_SRV);
                cmd.arg(&self.exe).args(["echo", "--name", "server", "--port", &P_APP.to_string()]);
                let c = self.spawn("app", cmd)?;
                self.wait_log("app", "serving HTTP and TCP")?;
                c
            }
        };
        Ok(Component { role: "app", ..c })
    }

    pub fn start_nginx_pair(&mut self) -> Result<[Component; 2]> {
        let server = self.nginx(NS_SRV, "nginx-in", NGINX_IN)?;
        let client = self.nginx(NS_CLI, "nginx-out", NGINX_OUT)?;
        Ok([Component { role: "client", ..client }, Component { role: "server", ..server }])
    }

    pub fn start_haproxy_pair(&mut self) -> Result<[Component; 2]> {
        let server = self.haproxy(NS_SRV, "haproxy-in", HAPROXY_IN)?;
        let client = self.haproxy(NS_CLI, "haproxy-out", HAPROXY_OUT)?;
        Ok([Component { role: "client", ..client }, Component { role: "server", ..server }])
    }

    /// Both podmesh sidecars, as `podmesh proxy` runs in a pod (mark-excluded from capture), access log off as
    /// the nginx and HAProxy pairs have theirs.
    pub fn start_podmesh_pair(&mut self) -> Result<[Component; 2]> {
        let mut started = Vec::new();
        for (side, ns) in [("server", NS_SRV), ("client", NS_CLI)] {
            let d = self.certs().join(side);
            let mut cmd = self.sut(ns);
            cmd.arg(&self.exe).arg("proxy");
            cmd.arg("--config").arg(d.join("config.json"));
            cmd.arg("--cert").arg(d.join("cert.pem")).arg("--key").arg(d.join("key.pem"));
            cmd.arg("--roots").arg(d.join("roots.pem"));
            cmd.args(["--access-log", "off"]);
            cmd.arg("--concurrency").arg(self.workers.to_string());
            let name = format!("podmesh-{side}");
            let c = self.spawn(&name, cmd)?;
            self.wait_log(&name, "podmesh proxy: sidecar of")?;
            started.push(Component { role: if side == "client" { "client" } else { "server" }, ..c });
        }
        match <[Component; 2]>::try_from(started) {
            Ok([server, client]) => Ok([client, server]),
            Err(_) => Err(anyhow!("podmesh pair did not start")),
        }
    }

    /// Installs (`podmesh capture install`) or removes the capture rules in both namespaces.
    pub fn capture(&self, on: bool) -> Result<()> {
        self.capture_in(&[NS_CLI, NS_SRV], on)
    }

    /// Installs or removes the capture rules in the given namespaces.
    pub fn capture_in(&self, namespaces: &[&str], on: bool) -> Result<()> {
        for &ns in namespaces {
            let mut cmd = self.in_ns(ns, None);
            if on {
                cmd.arg(&self.exe).args(["capture", "install"]);
                let out = cmd.stdin(Stdio::null()).output().context("running podmesh capture install")?;
                if !out.status.success() {
                    bail!("podmesh capture install in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
                }
            } else {
                // An empty nat table: iptables-restore without --noflush replaces the table, chains included.
                let empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                             :POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
                let mut child = cmd
                    .arg("iptables-restore")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("running iptables-restore")?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(empty.as_bytes()).context("writing to iptables-restore")?;
                }
                let out = child.wait_with_output().context("running iptables-restore")?;
                if !out.status.success() {
                    bail!("removing the capture rules in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
                }
            }
        }
        Ok(())
    }

    /// One run of the load generator in the client namespace, pinned to the load generator's CPUs.
    pub fn loadgen(&self, args: &[String], duration: f64) -> Result<LoadResult> {
        let mut cmd = self.in_ns(NS_CLI, self.pin.as_ref().map(|p| p.loadgen.as_str()));
        cmd.arg(&self.exe).args(["bench", "loadgen"]).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting the load generator")?;
        // The generator bounds itself; this bounds it again should it hang.
        let deadline = Instant::now() + Duration::from_secs_f64(duration + 20.0);
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the load generator did not finish in {:.0} s", duration + 20.0);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().context("waiting for the load generator")?;
        if !out.status.success() {
            bail!("the load generator failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        serde_json::from_slice(&out.stdout).context("reading the load generator's result")
    }
}

/// A server certificate for the nginx and HAProxy peers: DNS SAN `server.mesh.local` (what their client sides
/// verify) and the server's SPIFFE URI, ECDSA P-256 like the mesh's, signed by the mesh root.
fn peer_server_cert(root_pem: &str, root_key_pem: &str) -> Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let issuer = Issuer::from_ca_cert_pem(root_pem, KeyPair::from_pem(root_key_pem)?)?;
    let mut params = CertificateParams::new(vec![PEER_NAME.to_string()])?;
    params.subject_alt_names.push(SanType::URI(SERVER_ID.try_into()?));
    params.distinguished_name.push(DnType::CommonName, PEER_NAME);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// utime + stime of one process (all its threads), in clock ticks.
pub fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The process and all its descendants (nginx's master and workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent(p)?)))
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// CPU seconds used so far by a process tree.
pub fn tree_cpu(pid: u32) -> f64 {
    tree(pid).into_iter().filter_map(proc_ticks).sum::<u64>() as f64 / CLK_TCK
}

/// VmRSS and VmHWM of a process tree, in KiB (summed over its processes, as the shared harness does).
pub fn tree_mem_kib(pid: u32) -> (u64, u64) {
    let mut rss = 0;
    let mut hwm = 0;
    for p in tree(pid) {
        for line in std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default().lines() {
            let kib = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if line.starts_with("VmRSS:") {
                rss += kib();
            } else if line.starts_with("VmHWM:") {
                hwm += kib();
            }
        }
    }
    (rss, hwm)
}

/// The host's busy and steal shares between two /proc/stat samples.
pub fn cpu_sample() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default()
}

/// (busy %, steal %) between two samples of [`cpu_sample`].
pub fn busy_steal(a: &[u64], b: &[u64]) -> (f64, f64) {
    let d: Vec<u64> = a.iter().zip(b).map(|(x, y)| y.saturating_sub(*x)).collect();
    let total: u64 = d.iter().take(8).sum();
    if total == 0 || d.len() < 8 {
        return (0.0, 0.0);
    }
    let idle = d[3] + d[4];
    (100.0 * (total - idle) as f64 / total as f64, 100.0 * d[7] as f64 / total as f64)
}
