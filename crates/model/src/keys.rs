//! Names of objects: `namespace/name` keys and kind-qualified references.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `namespace/name` of a namespaced object. Ordered by namespace, then name, so every map keyed by it iterates
/// in the same order whatever order the manifests were loaded in.
///
/// Both parts are shared strings: keys are cloned into every index that relates objects (a pod's key sits in a
/// dozen maps and lists), and a clone is then two reference-count increments rather than two allocations.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// Parses `ns/name`; a bare `name` is in namespace `default`, as kubectl does.
    pub fn parse(s: &str) -> Option<Self> {
        let (ns, name) = match s.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => ("default", s),
        };
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(Self::new(ns, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectKey::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not namespace/name")))
    }
}

/// The kinds of object podmesh reads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    Service,
    Pod,
    Deployment,
    StatefulSet,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    PeerAuthentication,
    MeshConfig,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::MeshConfig => "MeshConfig",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind-qualified object name, e.g. `Service shop/web`. Namespaces use their name as both parts' name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: Kind,
    pub key: ObjectKey,
}

impl ObjectRef {
    pub fn new(kind: Kind, key: ObjectKey) -> Self {
        Self { kind, key }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Namespace | Kind::MeshConfig => write!(f, "{} {}", self.kind, self.key.name),
            _ => write!(f, "{} {}", self.kind, self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keys() {
        assert_eq!(ObjectKey::parse("shop/web"), Some(ObjectKey::new("shop", "web")));
        assert_eq!(ObjectKey::parse("web"), Some(ObjectKey::new("default", "web")));
        assert_eq!(ObjectKey::parse("a/b/c"), None);
        assert_eq!(ObjectKey::parse("/b"), None);
        assert_eq!(ObjectKey::parse("a/"), None);
    }
}
