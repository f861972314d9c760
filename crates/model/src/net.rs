//! Ports and addresses: newtypes for the two kinds of port, and deterministic address allocation.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A port a Service declares (`Service.spec.ports[].port`): what clients dial on a ClusterIP.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServicePort(pub u16);

/// A port on a pod (`targetPort`, `containerPort`): where traffic lands in the application.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetPort(pub u16);

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// 64-bit FNV-1a: a small, stable hash for generated names and addresses. Stable across releases and platforms,
/// unlike `std`'s `DefaultHasher`, so the same manifests always give the same pod names and IPs.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv::default();
    for part in parts {
        h.write(part);
        // Separator, so ("ab","c") and ("a","bc") differ.
        h.end_part();
    }
    h.0
}

/// FNV-1a fed in pieces, for hashing without building the string first.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn end_part(&mut self) -> &mut Self {
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash an object's address is derived from: `fnv1a(["namespace/name"])`, computed without allocating.
pub fn key_hash(namespace: &str, name: &str) -> u64 {
    Fnv::default().write(namespace.as_bytes()).write(b"/").write(name.as_bytes()).end_part().finish()
}

/// Hands out addresses from a CIDR: each name gets an address derived from its hash, probing forward on
/// collision. Derived from the name, not the load order, so adding one pod does not renumber the others.
#[derive(Debug)]
pub struct Allocator {
    net: IpNet,
    /// Offsets below this are reserved (network address, gateway, well-known service IPs).
    first: u128,
    /// Number of usable offsets from `first`.
    span: u128,
    used: HashSet<IpAddr>,
}

/// Addresses at the start of a range that are never handed out: the network address, the gateway (`.1`) and,
/// in the service range, the addresses Kubernetes gives to `kubernetes` and `kube-dns`.
const RESERVED_LOW: u128 = 16;

impl Allocator {
    pub fn new(net: IpNet) -> Self {
        let bits = u32::from(net.max_prefix_len() - net.prefix_len());
        let size: u128 = if bits >= 128 { u128::MAX } else { 1u128 << bits };
        // Keep the last address out too (broadcast in IPv4).
        let span = size.saturating_sub(RESERVED_LOW + 1);
        Self { net, first: RESERVED_LOW, span, used: HashSet::new() }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&ip)
    }

    /// Marks an address as taken. Returns false if it already was.
    pub fn reserve(&mut self, ip: IpAddr) -> bool {
        self.used.insert(ip)
    }

    /// The address for `name`, or None when the range is full.
    pub fn allocate(&mut self, name: &str) -> Option<IpAddr> {
        self.allocate_hashed(fnv1a(&[name.as_bytes()]))
    }

    /// The address for a name whose hash is `hash` (see [`key_hash`]).
    pub fn allocate_hashed(&mut self, hash: u64) -> Option<IpAddr> {
        if self.span == 0 {
            return None;
        }
        let start = u128::from(hash) % self.span;
        // Bounded probe: at most the whole span, and at most as many steps as addresses could be taken + 1.
        let limit = self.span.min(self.used.len() as u128 + 1);
        for step in 0..limit {
            let offset = self.first + (start + step) % self.span;
            let ip = self.nth(offset);
            if self.used.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    fn nth(&self, offset: u128) -> IpAddr {
        match self.net.network() {
            IpAddr::V4(v4) => {
                let base = u32::from(v4);
                // offset < 2^32 for IPv4 because span is derived from the prefix.
                IpAddr::V4((base.wrapping_add(offset as u32)).into())
            }
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(offset)).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_stable_and_unique() {
        let net: IpNet = "10.244.0.0/16".parse().unwrap();
        let mut a = Allocator::new(net);
        let x = a.allocate("shop/web-1");
        let mut b = Allocator::new(net);
        b.allocate("shop/other");
        // Same name, same address, whatever else was allocated (barring collision).
        assert_eq!(x, b.allocate("shop/web-1"));
        let mut seen = HashSet::new();
        for i in 0..2000 {
            let ip = a.allocate(&format!("p{i}")).unwrap();
            assert!(net.contains(&ip));
            assert!(seen.insert(ip));
        }
    }

    #[test]
    fn key_hash_is_the_hash_of_the_joined_name() {
        assert_eq!(key_hash("shop", "web-1"), fnv1a(&[b"shop/web-1"]));
    }

    #[test]
    fn full_range_reports_none() {
        let net: IpNet = "10.0.0.0/27".parse().unwrap();
        let mut a = Allocator::new(net);
        let mut n = 0;
        while a.allocate(&format!("x{n}")).is_some() {
            n += 1;
            assert!(n < 100);
        }
        assert_eq!(n, 32 - 16 - 1);
    }
}
