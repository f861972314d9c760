//! The node's pod network: a bridge that carries the pod CIDR's first address (every pod's gateway), and per pod a
//! network namespace joined to the bridge by a veth pair, holding the pod's address on `eth0`, loopback up and a
//! default route via the bridge.
//!
//! A pod's address is a host address (/32, /128) with only the node on its link, so everything a pod sends,
//! to another pod too, goes through the node's routing and netfilter, as with Calico: a connection the node
//! translates (a ClusterIP, as kube-proxy does) has its replies pass the node's conntrack and come back from the
//! address the client dialled. On a shared subnet the reply would go straight across the bridge, untranslated,
//! unless bridged traffic went through iptables (br_netfilter), which a network namespace cannot count on. Where
//! the host has br_netfilter loaded, it is turned off for this namespace's bridge, so that the node's netfilter
//! sees pod traffic the one way, routed.
//!
//! It is made with `ip` (iproute2) and must run inside the private network and mount namespaces `podmesh up`
//! makes for itself: the bridge, the namespaces and the mount of `/run/netns` then exist only there, and vanish
//! with them, whatever happens to the process.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("running {command}: {source} (is iproute2 installed?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("the pod CIDR {0} has no address for the node's bridge")]
    NoGateway(IpNet),
    #[error("pod address {ip} is not in the pod CIDR {cidr}")]
    OutsideCidr { ip: IpAddr, cidr: IpNet },
}

/// The bridge and the pods on it.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    cidr: IpNet,
    gateway: IpAddr,
    /// Host ends made so far: each pod's is numbered, as interface names are limited to 15 bytes.
    veths: u32,
}

impl Network {
    /// Makes the bridge `bridge` with the pod CIDR's first address, brings the node's loopback up, and mounts a
    /// tmpfs of its own on `/run/netns` (where `ip netns add` keeps its namespaces), all in the current network
    /// and mount namespaces.
    pub fn create(bridge: &str, cidr: IpNet) -> Result<Network, NetError> {
        let gateway = first_address(cidr).ok_or(NetError::NoGateway(cidr))?;
        std::fs::create_dir_all("/run/netns")
            .map_err(|source| NetError::Spawn { command: "mkdir -p /run/netns".into(), source })?;
        run(Command::new("mount").args(["-t", "tmpfs", "podmesh-netns", "/run/netns"]))?;
        iproute(&["link", "set", "lo", "up"])?;
        iproute(&["link", "add", bridge, "type", "bridge"])?;
        // A bridge takes the lowest MAC address of its ports unless it has one of its own: each pod added could
        // change it under the pods that have the gateway's address cached (for up to half a minute), and their
        // replies would go astray. A fixed, locally administered address (as CNI bridges set) keeps it.
        iproute(&["link", "set", bridge, "address", "02:70:6d:00:00:01"])?;
        iproute(&with_nodad(&["addr", "add", &format!("{gateway}/{}", cidr.prefix_len()), "dev", bridge], gateway))?;
        iproute(&["link", "set", bridge, "up"])?;
        // The node forwards between pods (every pod's traffic comes to it), without telling them to go round it.
        let sysctls: &[(&str, &str)] = match gateway {
            IpAddr::V4(_) => &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv4/conf/all/send_redirects", "0"),
                ("net/ipv4/conf/default/send_redirects", "0"),
            ],
            IpAddr::V6(_) => &[("net/ipv6/conf/all/forwarding", "1")],
        };
        for (name, value) in sysctls {
            let path = std::path::Path::new("/proc/sys").join(name);
            std::fs::write(&path, value).map_err(|source| NetError::Spawn {
                command: format!("writing {value} to {}", path.display()),
                source,
            })?;
        }
        // Present only where the host loaded br_netfilter; per network namespace.
        for name in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"] {
            let path = std::path::Path::new("/proc/sys/net/bridge").join(name);
            if path.exists() {
                std::fs::write(&path, "0").map_err(|source| NetError::Spawn {
                    command: format!("writing 0 to {}", path.display()),
                    source,
                })?;
            }
        }
        Ok(Network { bridge: bridge.to_string(), cidr, gateway, veths: 0 })
    }

    /// The node's address on the pod network: every pod's default gateway.
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// Routes the Service CIDR onto the pod network, so that the node's own processes can dial ClusterIPs: a
    /// locally made packet needs a route before its destination is translated (`nat` OUTPUT), while a pod's goes
    /// to the node by its default route anyway.
    pub fn route_services(&self, service_cidr: IpNet) -> Result<(), NetError> {
        iproute(&["route", "add", &service_cidr.to_string(), "dev", &self.bridge])
    }

    /// Gives a pod its network namespace `netns`, on the bridge with address `ip`. On failure, nothing of it is
    /// left.
    pub fn add_pod(&mut self, netns: &str, ip: IpAddr) -> Result<(), NetError> {
        if !self.cidr.contains(&ip) || ip == self.gateway {
            return Err(NetError::OutsideCidr { ip, cidr: self.cidr });
        }
        iproute(&["netns", "add", netns])?;
        self.veths += 1;
        let host_end = format!("pmv{}", self.veths);
        let wired = self.wire(netns, &host_end, ip);
        if wired.is_err() {
            // The pod's end goes with its namespace, and the host end with it.
            let _ = iproute(&["netns", "del", netns]);
        }
        wired
    }

    fn wire(&self, netns: &str, host_end: &str, ip: IpAddr) -> Result<(), NetError> {
        iproute(&["link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", netns])?;
        iproute(&["link", "set", host_end, "master", &self.bridge, "up"])?;
        let host = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
        iproute(&with_nodad(&["-n", netns, "addr", "add", &host, "dev", "eth0"], ip))?;
        iproute(&["-n", netns, "link", "set", "eth0", "up"])?;
        iproute(&["-n", netns, "link", "set", "lo", "up"])?;
        let gateway = self.gateway.to_string();
        iproute(&["-n", netns, "route", "add", &gateway, "dev", "eth0", "scope", "link"])?;
        iproute(&["-n", netns, "route", "add", "default", "via", &gateway, "dev", "eth0"])
    }

    /// Removes a pod's network namespace, and with it its interfaces and address.
    pub fn remove_pod(&mut self, netns: &str) -> Result<(), NetError> {
        iproute(&["netns", "del", netns])
    }

    /// A command that runs `program` in the pod's network namespace.
    pub fn exec(netns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns, program]);
        c
    }

    /// A command that runs `argv` in the pod's network namespace with `files` bind-mounted over paths of the
    /// machine (the pod's `/etc/resolv.conf` and `/etc/hosts`, its emptyDir volumes). `ip netns exec` gives each
    /// command a mount namespace of its own whose mounts do not propagate back, so the mounts are the pod's alone
    /// and go with its processes; each target must exist.
    pub fn exec_with_files(netns: &str, files: &[(PathBuf, PathBuf)], argv: &[String]) -> Command {
        let whole = Network::argv_with_files(netns, files, argv);
        let mut c = Command::new("ip");
        c.args(whole.iter().skip(1));
        c
    }

    /// The command line [`Network::exec_with_files`] runs, program first: `ip netns exec NETNS sh -c ...`.
    pub fn argv_with_files(netns: &str, files: &[(PathBuf, PathBuf)], argv: &[String]) -> Vec<String> {
        let mut v: Vec<String> =
            ["ip", "netns", "exec", netns, "sh", "-c", MOUNT_THEN_EXEC, "podmesh-pod"].map(String::from).to_vec();
        for (source, target) in files {
            v.push(source.to_string_lossy().into_owned());
            v.push(target.to_string_lossy().into_owned());
        }
        v.push("--".into());
        v.extend(argv.iter().cloned());
        v
    }

    /// Gives the node a further address of its own (on the bridge), e.g. the one its probes come from.
    pub fn add_node_address(&self, ip: IpAddr) -> Result<(), NetError> {
        let host = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
        iproute(&with_nodad(&["addr", "add", &host, "dev", &self.bridge], ip))
    }
}

/// Bind-mounts each pair of arguments (source, target) up to `--`, then runs the rest in its place.
const MOUNT_THEN_EXEC: &str =
    r#"set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@""#;

/// What a pod's resolver reads, as the kubelet writes it for `dnsPolicy: ClusterFirst`: the cluster DNS, the
/// search path from the pod's namespace, `ndots:5`.
pub fn resolv_conf(nameserver: IpAddr, namespace: &str, domain: &str) -> String {
    format!("nameserver {nameserver}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n")
}

/// A pod's `/etc/hosts`, as the kubelet writes it: loopback, then the pod's address with its own names (its
/// fully qualified name first when it has one under a headless Service).
pub fn hosts_file(ip: IpAddr, hostname: &str, fqdn: Option<&str>) -> String {
    let names = match fqdn {
        Some(f) => format!("{f}\t{hostname}"),
        None => hostname.to_string(),
    };
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{names}\n")
}

/// The first address of a network, which the node's bridge takes (10.244.0.1 for 10.244.0.0/16).
fn first_address(cidr: IpNet) -> Option<IpAddr> {
    let first = match cidr.network() {
        IpAddr::V4(n) => IpAddr::V4(u32::from(n).checked_add(1)?.into()),
        IpAddr::V6(n) => IpAddr::V6(u128::from(n).checked_add(1)?.into()),
    };
    cidr.contains(&first).then_some(first)
}

/// An `ip addr add` that makes an IPv6 address usable at once, not after duplicate address detection (there is
/// nothing else on this network to collide with).
fn with_nodad<'a>(args: &[&'a str], ip: IpAddr) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if ip.is_ipv6() {
        v.push("nodad");
    }
    v
}

fn iproute(args: &[&str]) -> Result<(), NetError> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<(), NetError> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| NetError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(NetError::Failed { command, stderr })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_pods_resolver_and_hosts_files_are_the_kubelets() {
        let ns: IpAddr = "10.244.0.1".parse().unwrap();
        assert_eq!(
            resolv_conf(ns, "shop", "cluster.local"),
            "nameserver 10.244.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let ip: IpAddr = "10.244.0.7".parse().unwrap();
        let hosts = hosts_file(ip, "kv-0", Some("kv-0.kv.store.svc.cluster.local"));
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.ends_with("10.244.0.7\tkv-0.kv.store.svc.cluster.local\tkv-0\n"), "{hosts}");
        assert!(hosts_file(ip, "web-1", None).ends_with("10.244.0.7\tweb-1\n"));
    }

    #[test]
    fn the_bridge_takes_the_first_address_of_the_pod_cidr() {
        let first = |s: &str| first_address(s.parse().unwrap()).map(|ip| ip.to_string());
        assert_eq!(first("10.244.0.0/16").as_deref(), Some("10.244.0.1"));
        assert_eq!(first("10.244.3.7/24").as_deref(), Some("10.244.3.1"));
        assert_eq!(first("fd00:10:244::/64").as_deref(), Some("fd00:10:244::1"));
        assert_eq!(first("10.0.0.5/32"), None);
        assert_eq!(first("255.255.255.255/32"), None);
    }
}
