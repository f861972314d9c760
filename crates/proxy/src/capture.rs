//! Transparent capture, as istio-init does it: NAT rules in the pod's network namespace send every outbound TCP
//! connection to the sidecar's 15001 and every inbound one to 15006; the original destination stays readable
//! from the socket. One function writes the rules ([`rules`]); `podmesh capture install` applies them at once
//! with `iptables-restore` (and `ip6tables-restore`), so a pod never runs with half its rules.
//!
//! What is never captured (no loops, ever):
//! - the sidecar's own connections: by socket mark (the proxy marks every socket it opens) or by user id (the
//!   proxy runs as its own uid in a real pod) — R7;
//! - inbound connections to the sidecar's own ports (R7): 15000, 15001, 15006, 15020, 15021, 15053;
//! - loopback: connections to 127.0.0.0/8 (::1) and anything leaving through `lo` (the application calling
//!   itself, also by its pod IP).
//!
//! What a pod may also leave uncaptured ([`CaptureOptions`]), as Istio's `traffic.sidecar.istio.io/*` pod
//! annotations do through istio-iptables, so that `podmesh inject` can turn those annotations into flags:
//! inbound ports (`excludeInboundPorts`, `includeInboundPorts`), outbound ports (`excludeOutboundPorts`) and
//! outbound destinations (`excludeOutboundIPRanges`, `includeOutboundIPRanges`). Exclusions always win over
//! inclusions: every RETURN comes before any REDIRECT.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::str::FromStr;

use podmesh_route::request::ports;

/// How the sidecar's own connections are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclude {
    /// Sockets carrying this SO_MARK (the proxy's `--mark`).
    Mark(u32),
    /// Sockets owned by this user id (the proxy runs as it; Istio's 1337).
    Uid(u32),
}

/// The default mark and uid: Istio's 1337.
pub const DEFAULT_MARK: u32 = 1337;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

/// A bad item in a port or address-range list. Said per item, so a long annotation's one typo is easy to find.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("bad port {0:?}: expected a number from 1 to 65535")]
    Port(String),
    #[error("bad CIDR {item:?}: {why}")]
    Cidr { item: String, why: &'static str },
    #[error("\"*\" (everything) must be the whole value, not an item of a list")]
    StarInList,
}

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is its own /32 (/128), as Istio accepts too.
/// Host bits are cleared, so the rules show the network iptables will actually match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `prefix` leading bits of `addr`; `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Cidr, ParseError> {
        let bad = |why| ParseError::Cidr { item: s.to_string(), why };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    bad(if max == 32 {
                        "the prefix length must be 0 to 32"
                    } else {
                        "the prefix length must be 0 to 128"
                    })
                })?
            }
            Some(_) => return Err(bad("the prefix length must be a number")),
        };
        Cidr::new(addr, prefix).ok_or_else(|| bad("the prefix is longer than the address"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One item of a comma-separated list: a port (`u16`, never 0) or a [`Cidr`].
pub trait ListItem: Sized {
    fn parse_item(item: &str) -> Result<Self, ParseError>;
}

impl ListItem for u16 {
    fn parse_item(item: &str) -> Result<u16, ParseError> {
        // Digits only: `u16::from_str` would also take "+80".
        Some(item)
            .filter(|i| i.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|i| i.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| ParseError::Port(item.to_string()))
    }
}

impl ListItem for Cidr {
    fn parse_item(item: &str) -> Result<Cidr, ParseError> {
        item.parse()
    }
}

/// Splits an annotation-style list: comma-separated, blanks around items and empty items ignored (as Istio's
/// validation ignores them), so `""` is the empty list.
fn parse_list<T: ListItem>(s: &str) -> Result<Vec<T>, ParseError> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|i| if i == "*" { Err(ParseError::StarInList) } else { T::parse_item(i) })
        .collect()
}

/// A comma-separated list of ports or ranges, as an `exclude*` annotation holds it (`"8081,9000"`, `""`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List<T>(pub Vec<T>);

impl<T: ListItem> FromStr for List<T> {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<List<T>, ParseError> {
        parse_list(s).map(List)
    }
}

/// What an `include*` annotation selects: `"*"` everything (the default), otherwise only the listed items —
/// and so `""` nothing at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Include<T> {
    #[default]
    All,
    Only(Vec<T>),
}

impl<T: ListItem> FromStr for Include<T> {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Include<T>, ParseError> {
        if s.trim() == "*" { Ok(Include::All) } else { parse_list(s).map(Include::Only) }
    }
}

/// Everything that shapes the capture rules. `Default` is a pod without traffic annotations: all TCP captured
/// both ways except the sidecar's own (by mark 1337), its ports and loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// How the proxy's own connections are recognised (R7).
    pub exclude: Exclude,
    /// Sources whose inbound connections reach the application uncaptured: the node's probes.
    pub inbound_bypass: Vec<IpAddr>,
    /// Inbound destination ports to capture (`includeInboundPorts`); the R7 ports never are.
    pub include_inbound_ports: Include<u16>,
    /// Inbound destination ports left alone (`excludeInboundPorts`); wins over the include list.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone (`excludeOutboundPorts`).
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations to capture (`includeOutboundIPRanges`); each family's rules take their own.
    pub include_outbound_ip_ranges: Include<Cidr>,
    /// Outbound destinations left alone (`excludeOutboundIPRanges`); wins over the include list.
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
}

impl Default for CaptureOptions {
    fn default() -> CaptureOptions {
        CaptureOptions {
            exclude: Exclude::Mark(DEFAULT_MARK),
            inbound_bypass: Vec::new(),
            include_inbound_ports: Include::All,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            include_outbound_ip_ranges: Include::All,
            exclude_outbound_ip_ranges: Vec::new(),
        }
    }
}

/// The `iptables-restore` input for one address family.
///
/// Each chain returns first for whatever must not be captured, then redirects. With an include list the chain
/// redirects only the listed ports (ranges) and ends with RETURN; with an empty one nothing jumps to the chain
/// at all (it is still declared, so it is flushed on reinstall). REDIRECT is terminating, so the first
/// matching rule decides.
pub fn rules(family: Family, opts: &CaptureOptions) -> String {
    let loopback = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    let own = match opts.exclude {
        Exclude::Mark(m) => format!("-m mark --mark {m:#x}"),
        Exclude::Uid(u) => format!("-m owner --uid-owner {u}"),
    };
    let mine = |c: &&Cidr| c.family() == family;
    let mut r = String::new();
    r.push_str("# podmesh capture rules (R7): outbound TCP -> 15001, inbound TCP -> 15006.\n*nat\n");
    for chain in ["PODMESH_INBOUND", "PODMESH_OUTPUT"] {
        let _ = writeln!(r, ":{chain} - [0:0]");
    }

    // Inbound: everything but the probes, the sidecar's own ports and the excluded ports. A listed port that is
    // also excluded (or a sidecar port) would never reach its REDIRECT, so it is left out of the list.
    let inbound = match &opts.include_inbound_ports {
        Include::All => Some(None),
        Include::Only(list) => {
            let list: Vec<u16> = list
                .iter()
                .copied()
                .filter(|p| !ports::ALL.contains(p) && !opts.exclude_inbound_ports.contains(p))
                .collect();
            (!list.is_empty()).then_some(Some(list))
        }
    };
    if let Some(only) = inbound {
        r.push_str("-A PREROUTING -p tcp -j PODMESH_INBOUND\n");
        for source in opts.inbound_bypass.iter().filter(|s| Family::of(**s) == family) {
            let prefix = if source.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(r, "-A PODMESH_INBOUND -s {source}/{prefix} -j RETURN");
        }
        for p in ports::ALL.iter().chain(&opts.exclude_inbound_ports) {
            let _ = writeln!(r, "-A PODMESH_INBOUND -p tcp --dport {p} -j RETURN");
        }
        let to = ports::INBOUND_CAPTURE;
        match only {
            None => {
                let _ = writeln!(r, "-A PODMESH_INBOUND -p tcp -j REDIRECT --to-ports {to}");
            }
            Some(list) => {
                for p in list {
                    let _ = writeln!(r, "-A PODMESH_INBOUND -p tcp --dport {p} -j REDIRECT --to-ports {to}");
                }
                r.push_str("-A PODMESH_INBOUND -j RETURN\n");
            }
        }
    }

    // Outbound: everything but the sidecar's own sockets (first: its connections must never be redirected,
    // whatever follows), loopback and the excluded ports and destinations.
    let outbound = match &opts.include_outbound_ip_ranges {
        Include::All => Some(None),
        Include::Only(list) => {
            let list: Vec<Cidr> = list.iter().filter(mine).copied().collect();
            (!list.is_empty()).then_some(Some(list))
        }
    };
    if let Some(only) = outbound {
        r.push_str("-A OUTPUT -p tcp -j PODMESH_OUTPUT\n");
        let _ = writeln!(r, "-A PODMESH_OUTPUT {own} -j RETURN");
        let _ = writeln!(r, "-A PODMESH_OUTPUT -d {loopback} -j RETURN");
        r.push_str("-A PODMESH_OUTPUT -o lo -j RETURN\n");
        for p in &opts.exclude_outbound_ports {
            let _ = writeln!(r, "-A PODMESH_OUTPUT -p tcp --dport {p} -j RETURN");
        }
        for cidr in opts.exclude_outbound_ip_ranges.iter().filter(mine) {
            let _ = writeln!(r, "-A PODMESH_OUTPUT -d {cidr} -j RETURN");
        }
        let to = ports::OUTBOUND_CAPTURE;
        match only {
            None => {
                let _ = writeln!(r, "-A PODMESH_OUTPUT -p tcp -j REDIRECT --to-ports {to}");
            }
            Some(list) => {
                for cidr in list {
                    let _ = writeln!(r, "-A PODMESH_OUTPUT -p tcp -d {cidr} -j REDIRECT --to-ports {to}");
                }
                r.push_str("-A PODMESH_OUTPUT -j RETURN\n");
            }
        }
    }
    r.push_str("COMMIT\n");
    r
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot run {tool}: {source} (install the iptables package: apt-get install -y iptables)")]
    Spawn { tool: &'static str, source: std::io::Error },
    #[error("{tool} refused the rules: {stderr}")]
    Refused { tool: &'static str, stderr: String },
}

/// Applies the rules of both families in the current network namespace, atomically per family. `--noflush`
/// keeps other tables' rules; the rules go into the nat table's own chains.
pub fn install(opts: &CaptureOptions, ipv6: bool) -> Result<(), CaptureError> {
    restore("iptables-restore", &rules(Family::V4, opts))?;
    if ipv6 {
        restore("ip6tables-restore", &rules(Family::V6, opts))?;
    }
    Ok(())
}

fn restore(tool: &'static str, input: &str) -> Result<(), CaptureError> {
    let mut child = Command::new(tool)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CaptureError::Spawn { tool, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|source| CaptureError::Spawn { tool, source })?;
    }
    let out = child.wait_with_output().map_err(|source| CaptureError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CaptureError::Refused { tool, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The rule lines (no comments, declarations or COMMIT).
    fn lines(r: &str) -> Vec<&str> {
        r.lines().filter(|l| l.starts_with("-A")).collect()
    }

    /// Where the first line equal to `rule` is; panics with the rules when it is missing.
    fn at(r: &str, rule: &str) -> usize {
        lines(r).iter().position(|l| *l == rule).unwrap_or_else(|| panic!("{rule:?} missing in\n{r}"))
    }

    /// The lines of one chain, in order.
    fn chain<'a>(r: &'a str, name: &str) -> Vec<&'a str> {
        let prefix = format!("-A {name} ");
        lines(r).into_iter().filter(|l| l.starts_with(&prefix)).collect()
    }

    const IN_ALL: &str = "-A PODMESH_INBOUND -p tcp -j REDIRECT --to-ports 15006";
    const OUT_ALL: &str = "-A PODMESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001";

    fn cidrs(s: &str) -> Vec<Cidr> {
        s.parse::<List<Cidr>>().unwrap().0
    }

    #[test]
    fn rules_redirect_everything_but_the_sidecar_and_loopback() {
        let v4 = rules(Family::V4, &CaptureOptions::default());
        let lines: Vec<&str> = v4.lines().filter(|l| l.starts_with('-')).collect();
        // Inbound: the sidecar's ports return before the redirect.
        let redirect_in = lines.iter().position(|l| l.contains("--to-ports 15006")).unwrap_or(usize::MAX);
        for p in ports::ALL {
            let ret = lines.iter().position(|l| l.contains(&format!("--dport {p} -j RETURN")));
            assert!(ret.is_some_and(|i| i < redirect_in), "port {p} is not excluded before the redirect");
        }
        // Outbound: the proxy's mark first, loopback and lo return before the redirect.
        let redirect_out = lines.iter().position(|l| l.contains("--to-ports 15001")).unwrap_or(usize::MAX);
        for needle in ["--mark 0x539 -j RETURN", "-d 127.0.0.0/8 -j RETURN", "-o lo -j RETURN"] {
            let i = lines.iter().position(|l| l.contains(needle));
            assert!(i.is_some_and(|i| i < redirect_out), "{needle} missing or after the redirect");
        }
        assert_eq!(chain(&v4, "PODMESH_OUTPUT")[0], "-A PODMESH_OUTPUT -m mark --mark 0x539 -j RETURN");
        assert!(v4.starts_with("# podmesh") && v4.ends_with("COMMIT\n"));
        let uid = CaptureOptions { exclude: Exclude::Uid(1337), ..CaptureOptions::default() };
        let v6 = rules(Family::V6, &uid);
        assert!(v6.contains("-m owner --uid-owner 1337 -j RETURN") && v6.contains("-d ::1/128 -j RETURN"));
        // A source let through (the node's probes), before the redirect, in its own family only.
        let probe: IpAddr = "169.254.7.127".parse().unwrap();
        let with = CaptureOptions { inbound_bypass: vec![probe], ..CaptureOptions::default() };
        let r = rules(Family::V4, &with);
        assert!(at(&r, "-A PODMESH_INBOUND -s 169.254.7.127/32 -j RETURN") < at(&r, IN_ALL), "{r}");
        assert!(!rules(Family::V6, &with).contains("169.254"));
    }

    #[test]
    fn exclusions_return_before_the_redirect() {
        let opts = CaptureOptions {
            exclude_inbound_ports: "8081, 9000".parse::<List<u16>>().unwrap().0,
            exclude_outbound_ports: "5432".parse::<List<u16>>().unwrap().0,
            exclude_outbound_ip_ranges: cidrs("10.0.0.0/8,169.254.169.254/32,fd00::/8"),
            ..CaptureOptions::default()
        };
        let v4 = rules(Family::V4, &opts);
        for p in [8081, 9000] {
            assert!(at(&v4, &format!("-A PODMESH_INBOUND -p tcp --dport {p} -j RETURN")) < at(&v4, IN_ALL));
        }
        let redirect = at(&v4, OUT_ALL);
        let mark = at(&v4, "-A PODMESH_OUTPUT -m mark --mark 0x539 -j RETURN");
        for rule in [
            "-A PODMESH_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A PODMESH_OUTPUT -d 10.0.0.0/8 -j RETURN",
            "-A PODMESH_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A PODMESH_OUTPUT -d 127.0.0.0/8 -j RETURN",
            "-A PODMESH_OUTPUT -o lo -j RETURN",
        ] {
            let i = at(&v4, rule);
            assert!(mark < i && i < redirect, "{rule} out of order in\n{v4}");
        }
        assert!(!v4.contains("fd00"), "an IPv6 range in the IPv4 rules:\n{v4}");
        // IPv6: the same ports, only the IPv6 range.
        let v6 = rules(Family::V6, &opts);
        assert!(at(&v6, "-A PODMESH_OUTPUT -d fd00::/8 -j RETURN") < at(&v6, OUT_ALL));
        assert!(at(&v6, "-A PODMESH_OUTPUT -p tcp --dport 5432 -j RETURN") < at(&v6, OUT_ALL));
        assert!(at(&v6, "-A PODMESH_INBOUND -p tcp --dport 8081 -j RETURN") < at(&v6, IN_ALL));
        assert!(!v6.contains("10.0.0.0") && !v6.contains("169.254"), "an IPv4 range in the IPv6 rules:\n{v6}");
    }

    #[test]
    fn include_lists_redirect_only_what_they_name() {
        let opts = CaptureOptions {
            // 15020 is a sidecar port and 9000 is also excluded: neither may be redirected.
            include_inbound_ports: "8080,9000,15020".parse().unwrap(),
            exclude_inbound_ports: vec![9000],
            include_outbound_ip_ranges: "10.96.0.0/12, 10.244.0.0/16,fd00::/8".parse().unwrap(),
            exclude_outbound_ip_ranges: cidrs("10.96.0.10"),
            exclude_outbound_ports: vec![5432],
            ..CaptureOptions::default()
        };
        let v4 = rules(Family::V4, &opts);
        // Inbound: the RETURNs, one REDIRECT for 8080, then RETURN for everything else; no catch-all REDIRECT.
        let inbound = chain(&v4, "PODMESH_INBOUND");
        let redirects: Vec<&&str> = inbound.iter().filter(|l| l.contains("REDIRECT")).collect();
        assert_eq!(redirects, [&"-A PODMESH_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006"], "{v4}");
        assert_eq!(inbound.last(), Some(&"-A PODMESH_INBOUND -j RETURN"));
        let redirect = at(&v4, redirects[0]);
        for p in [15020, 9000] {
            assert!(at(&v4, &format!("-A PODMESH_INBOUND -p tcp --dport {p} -j RETURN")) < redirect);
        }
        // Outbound: the exclusions first, one REDIRECT per IPv4 range, then RETURN.
        let outbound = chain(&v4, "PODMESH_OUTPUT");
        let redirects: Vec<&&str> = outbound.iter().filter(|l| l.contains("REDIRECT")).collect();
        assert_eq!(
            redirects,
            [
                &"-A PODMESH_OUTPUT -p tcp -d 10.96.0.0/12 -j REDIRECT --to-ports 15001",
                &"-A PODMESH_OUTPUT -p tcp -d 10.244.0.0/16 -j REDIRECT --to-ports 15001"
            ],
            "{v4}"
        );
        assert_eq!(outbound.last(), Some(&"-A PODMESH_OUTPUT -j RETURN"));
        assert_eq!(outbound[0], "-A PODMESH_OUTPUT -m mark --mark 0x539 -j RETURN");
        let first = at(&v4, redirects[0]);
        for rule in ["-A PODMESH_OUTPUT -d 10.96.0.10/32 -j RETURN", "-A PODMESH_OUTPUT -p tcp --dport 5432 -j RETURN"]
        {
            assert!(at(&v4, rule) < first, "{rule} after the redirect in\n{v4}");
        }
        // IPv6: only the IPv6 range is redirected.
        let v6 = rules(Family::V6, &opts);
        let redirects: Vec<&str> =
            chain(&v6, "PODMESH_OUTPUT").into_iter().filter(|l| l.contains("REDIRECT")).collect();
        assert_eq!(redirects, ["-A PODMESH_OUTPUT -p tcp -d fd00::/8 -j REDIRECT --to-ports 15001"], "{v6}");
        // An include list with nothing of this family captures nothing of it.
        let v4_only = CaptureOptions { include_outbound_ip_ranges: "10.0.0.0/8".parse().unwrap(), ..opts };
        let v6 = rules(Family::V6, &v4_only);
        assert!(!v6.contains("--to-ports 15001") && !v6.contains("-A OUTPUT"), "{v6}");
    }

    #[test]
    fn empty_include_captures_nothing_in_that_direction() {
        let no_inbound = CaptureOptions { include_inbound_ports: "".parse().unwrap(), ..CaptureOptions::default() };
        for family in [Family::V4, Family::V6] {
            let r = rules(family, &no_inbound);
            assert!(!r.contains("--to-ports 15006") && !r.contains("-A PREROUTING"), "{r}");
            assert!(r.contains(OUT_ALL), "{r}");
        }
        // Only sidecar ports listed: nothing left to capture either.
        let sidecar = CaptureOptions { include_inbound_ports: "15006".parse().unwrap(), ..CaptureOptions::default() };
        assert!(!rules(Family::V4, &sidecar).contains("REDIRECT --to-ports 15006"));
        let no_outbound =
            CaptureOptions { include_outbound_ip_ranges: "".parse().unwrap(), ..CaptureOptions::default() };
        for family in [Family::V4, Family::V6] {
            let r = rules(family, &no_outbound);
            assert!(!r.contains("--to-ports 15001") && !r.contains("-A OUTPUT"), "{r}");
            assert!(r.contains(IN_ALL), "{r}");
            // The chains are still declared, so a reinstall flushes what an earlier install put in them.
            assert!(r.contains(":PODMESH_INBOUND - [0:0]\n:PODMESH_OUTPUT - [0:0]\n"), "{r}");
        }
        assert_eq!("*".parse::<Include<u16>>().unwrap(), Include::All);
        assert_eq!(" * ".parse::<Include<Cidr>>().unwrap(), Include::All);
    }

    #[test]
    fn lists_parse_leniently_and_reject_bad_items_by_name() {
        assert_eq!("".parse::<List<u16>>().unwrap().0, Vec::<u16>::new());
        assert_eq!(" 8081 , 9000,".parse::<List<u16>>().unwrap().0, [8081, 9000]);
        assert_eq!("".parse::<Include<u16>>().unwrap(), Include::Only(vec![]));
        // Host bits are cleared; a bare address is a single host.
        let c: Vec<String> =
            cidrs("10.1.2.3/8,169.254.169.254,fd00::1/8,::1,0.0.0.0/0").iter().map(ToString::to_string).collect();
        assert_eq!(c, ["10.0.0.0/8", "169.254.169.254/32", "fd00::/8", "::1/128", "0.0.0.0/0"]);
        for (input, item) in [("8081,x", "x"), ("80,0", "0"), ("65536", "65536"), ("+80", "+80"), ("80-90", "80-90")] {
            let e = input.parse::<List<u16>>().unwrap_err();
            assert_eq!(e, ParseError::Port(item.to_string()), "{input}");
            assert!(e.to_string().contains(&format!("{item:?}")), "{e}");
            assert!(input.parse::<Include<u16>>().is_err(), "{input}");
        }
        for (input, item) in [
            ("10.0.0.0/8,10.0.0/8", "10.0.0/8"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("fd00::/129", "fd00::/129"),
            ("10.0.0.0/", "10.0.0.0/"),
            ("10.0.0.0/x", "10.0.0.0/x"),
            ("example.com", "example.com"),
        ] {
            let e = input.parse::<List<Cidr>>().unwrap_err();
            assert!(matches!(&e, ParseError::Cidr { item: i, .. } if i == item), "{input}: {e:?}");
            assert!(e.to_string().contains(&format!("{item:?}")), "{e}");
            assert!(input.parse::<Include<Cidr>>().is_err(), "{input}");
        }
        assert_eq!("80,*".parse::<Include<u16>>().unwrap_err(), ParseError::StarInList);
        assert_eq!("*".parse::<List<Cidr>>().unwrap_err(), ParseError::StarInList);
    }

    /// Feeds the rules to `iptables-restore --test` (parse and check, commit nothing) inside a new, empty network
    /// namespace, so the host's rules are not even looked at. `None`: the tool cannot be run here.
    fn accepted(tool: &str, input: &str) -> Option<Result<(), String>> {
        let mut child = Command::new("unshare")
            .args(["--net", tool, "--test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        Some(if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) })
    }

    #[test]
    fn iptables_restore_accepts_every_rule_set() {
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
        if !root {
            eprintln!("skipped: iptables-restore --test needs root");
            return;
        }
        // Probe with the default rules: a failure here is the environment (no unshare, no iptables, no netns).
        let default = CaptureOptions::default();
        for tool in ["iptables-restore", "ip6tables-restore"] {
            let family = if tool == "iptables-restore" { Family::V4 } else { Family::V6 };
            if !matches!(accepted(tool, &rules(family, &default)), Some(Ok(()))) {
                eprintln!("skipped: `unshare --net {tool} --test` cannot run here");
                return;
            }
        }
        let probe: IpAddr = "169.254.7.127".parse().unwrap();
        let probe6: IpAddr = "fd00::7f".parse().unwrap();
        let sets = [
            CaptureOptions { exclude: Exclude::Uid(1337), inbound_bypass: vec![probe, probe6], ..default.clone() },
            CaptureOptions {
                exclude_inbound_ports: vec![8081, 9000],
                exclude_outbound_ports: vec![5432],
                exclude_outbound_ip_ranges: cidrs("10.0.0.0/8,169.254.169.254/32,fd00::/8,::ffff:0:0/96"),
                ..default.clone()
            },
            CaptureOptions {
                include_inbound_ports: "8080,9000".parse().unwrap(),
                exclude_inbound_ports: vec![9000],
                include_outbound_ip_ranges: "10.96.0.0/12,0.0.0.0/0,fd00::/8".parse().unwrap(),
                exclude_outbound_ip_ranges: cidrs("10.96.0.10"),
                ..default.clone()
            },
            CaptureOptions {
                include_inbound_ports: "".parse().unwrap(),
                include_outbound_ip_ranges: "".parse().unwrap(),
                ..default.clone()
            },
        ];
        for opts in &sets {
            for (tool, family) in [("iptables-restore", Family::V4), ("ip6tables-restore", Family::V6)] {
                let r = rules(family, opts);
                match accepted(tool, &r) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => panic!("{tool} refused\n{r}: {e}"),
                    None => panic!("{tool} could not be run"),
                }
            }
        }
    }
}
