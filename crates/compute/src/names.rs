//! R2 — the hostnames of Services and pods, and how a Host header is compared with them.
//!
//! Tables store canonical names only: the FQDN of each Service (`svc.ns.svc.<domain>`) and pod
//! (`host.sub.ns.svc.<domain>`), ClusterIPs, and literal VirtualService hosts. A Host is matched by trying the
//! names a client's resolver would try — the Kubernetes search path `<ns>.svc.<domain>`, `svc.<domain>`,
//! `<domain>` with `ndots: 5` — so the short forms of R2 (`svc.ns.svc`, `svc.ns`, and `svc` only from the same
//! namespace) are accepted exactly as DNS would resolve them, and nothing else is.

use std::borrow::Cow;
use std::net::IpAddr;

/// A Host header in canonical form: an IP address, or a lowercase name without `:port` and trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName<'a> {
    Ip(IpAddr),
    Name(Cow<'a, str>),
}

impl std::fmt::Display for HostName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostName::Ip(ip) => ip.fmt(f),
            HostName::Name(n) => f.write_str(n),
        }
    }
}

/// Normalizes a Host header (R2): case-insensitive, `:port` ignored, trailing dot ignored, `[v6]` brackets
/// removed. None for an empty host, and for anything that is not a name or an address.
pub fn normalize(host: &str) -> Option<HostName<'_>> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port. Brackets hold only an IP literal (RFC 3986 §3.2.2): `[[web]` is not `[web`.
        let end = rest.find(']')?;
        return rest[..end].parse().ok().map(HostName::Ip);
    }
    let bare = match host.split_once(':') {
        // name:port (an empty port is allowed by RFC 3986)
        Some((h, port)) if !port.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(HostName::Ip(ip));
    }
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    // What is left must be a name: not empty and no empty last label (`web..`), no ':' (that was neither a port
    // nor an IPv6 literal), no spaces (Unicode ones too: `trim` removes those, so `web\u{a0}.` would not read back
    // as itself) or controls.
    if bare.is_empty() || bare.ends_with('.') || bare.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(HostName::Name(if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(bare.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bare)
    }))
}

/// `svc.ns.svc.<domain>`
pub fn service_fqdn(service: &str, namespace: &str, domain: &str) -> String {
    format!("{service}.{namespace}.svc.{domain}")
}

/// `hostname.subdomain.ns.svc.<domain>`: a pod's own name under a headless Service (R2).
pub fn pod_fqdn(hostname: &str, subdomain: &str, namespace: &str, domain: &str) -> String {
    format!("{hostname}.{subdomain}.{namespace}.svc.{domain}")
}

/// Looks `name` up the way a pod's resolver in `client_ns` would (search path, `ndots: 5`): each candidate
/// name is passed to `lookup` in order, and the first hit is returned with the candidate that hit.
pub fn resolve<T>(
    name: &str,
    client_ns: &str,
    domain: &str,
    mut lookup: impl FnMut(&str) -> Option<T>,
) -> Option<(T, String)> {
    let dots = name.bytes().filter(|b| *b == b'.').count();
    let mut buf = String::with_capacity(name.len() + client_ns.len() + domain.len() + 8);
    let mut try_name = |suffix: &[&str], buf: &mut String| {
        buf.clear();
        buf.push_str(name);
        for s in suffix {
            buf.push('.');
            buf.push_str(s);
        }
        lookup(buf)
    };
    let search: [&[&str]; 3] = [&[client_ns, "svc", domain], &["svc", domain], &[domain]];
    if dots >= 5
        && let Some(t) = try_name(&[], &mut buf)
    {
        return Some((t, buf));
    }
    for suffix in search {
        if let Some(t) = try_name(suffix, &mut buf) {
            return Some((t, buf));
        }
    }
    if dots < 5
        && let Some(t) = try_name(&[], &mut buf)
    {
        return Some((t, buf));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn n(s: &str) -> Option<String> {
        normalize(s).map(|h| h.to_string())
    }

    #[test]
    fn normalization() {
        assert_eq!(n("Web.Shop"), Some("web.shop".into()));
        assert_eq!(n("web.shop:80"), Some("web.shop".into()));
        assert_eq!(n("web.shop.svc.cluster.local."), Some("web.shop.svc.cluster.local".into()));
        assert_eq!(n("WEB.shop.:8080"), Some("web.shop".into()));
        assert_eq!(n("10.0.0.1:80"), Some("10.0.0.1".into()));
        assert_eq!(normalize("10.0.0.1"), Some(HostName::Ip("10.0.0.1".parse().unwrap())));
        assert_eq!(normalize("[fd00::1]:80"), Some(HostName::Ip("fd00::1".parse().unwrap())));
        assert_eq!(normalize("fd00::1"), Some(HostName::Ip("fd00::1".parse().unwrap())));
        assert_eq!(n(""), None);
        assert_eq!(n("."), None);
        assert_eq!(n(":80"), None);
        // A non-numeric "port" is not a port, and a name cannot contain ':'.
        assert_eq!(n("web:abc"), None);
        assert_eq!(n("web:"), Some("web".into()));
        assert_eq!(n("fd00::zz"), None);
        // Found by fuzzing (fuzz/corpus/host). These gave a name that normalized again to something else: an
        // empty last label, a Unicode space before the trailing dot, a `[` inside brackets.
        assert_eq!(n("web.shop.."), None);
        assert_eq!(n("web\u{a0}."), None);
        assert_eq!(n("[[web]"), None);
        // Nor are these names: a name in brackets (they hold only addresses), a C1 control character.
        assert_eq!(n("[web]:80"), None);
        assert_eq!(n("web.sh\u{9c}op"), None);
    }

    fn table() -> HashSet<String> {
        ["web.shop.svc.cluster.local", "db-1.db.shop.svc.cluster.local", "api.example.com"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn hit(name: &str, ns: &str) -> Option<String> {
        let t = table();
        resolve(name, ns, "cluster.local", |c| t.get(c).cloned()).map(|(v, _)| v)
    }

    #[test]
    fn r2_short_forms_follow_the_search_path() {
        let web = Some("web.shop.svc.cluster.local".to_string());
        for (name, ns) in
            [("web.shop.svc.cluster.local", "other"), ("web.shop.svc", "other"), ("web.shop", "other"), ("web", "shop")]
        {
            assert_eq!(hit(name, ns), web, "{name} from {ns}");
        }
        // `svc` alone only from the Service's namespace.
        assert_eq!(hit("web", "other"), None);
        assert_eq!(hit("web.shop.svc.cluster", "other"), None);
        assert_eq!(hit("web.other", "shop"), None);
        let db1 = Some("db-1.db.shop.svc.cluster.local".to_string());
        assert_eq!(hit("db-1.db", "shop"), db1);
        assert_eq!(hit("db-1.db.shop", "x"), db1);
        assert_eq!(hit("db-1.db.shop.svc", "x"), db1);
        assert_eq!(hit("db-1.db", "x"), None);
        // Literal names match as they are.
        assert_eq!(hit("api.example.com", "x"), Some("api.example.com".into()));
        assert_eq!(hit("api.example", "x"), None);
    }

    proptest::proptest! {
        /// Host headers come from the network: any string normalizes without panicking, to a canonical form.
        #[test]
        fn normalize_never_panics_and_is_canonical(host in ".{0,64}") {
            if let Some(HostName::Name(n)) = normalize(&host) {
                proptest::prop_assert!(!n.bytes().any(|b| b.is_ascii_uppercase()));
                proptest::prop_assert!(!n.ends_with('.'));
                proptest::prop_assert!(!n.is_empty());
                // Idempotent.
                proptest::prop_assert_eq!(normalize(&n).map(|h| h.to_string()), Some(n.to_string()));
            }
            let t = table();
            let _ = resolve(&host, "shop", "cluster.local", |c| t.get(c).cloned());
        }
    }
}
