//! Mesh mTLS on the data path (R5): the client side checks the identity expected for the endpoint; the server side
//! tells mesh handshakes from an application's own TLS, and reads who the client is and how it addressed us (R3.6).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use podmesh_compute::Identity;
use podmesh_identity::Credentials;
use podmesh_model::{ObjectKey, ServicePort, TargetPort};
use podmesh_route::request::{Addressed, Peer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::io::Prefixed;

/// The ALPN protocol a mesh client offers: how a destination tells mesh mTLS from an application's own TLS
/// (PERMISSIVE admits both, R4.2).
pub const MESH_ALPN: &[u8] = b"podmesh/1";

/// R3.6: how the source addressed the destination, carried in the SNI. Service traffic uses Istio's form,
/// `outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<domain>` (`_` for no subset); direct traffic
/// `direct_.<target port>_.podmesh`.
pub fn server_name(addressed: &Addressed, subset: Option<&str>, direct_port: TargetPort, domain: &str) -> String {
    match addressed {
        Addressed::Service { service, port } => format!(
            "outbound_.{}_.{}.{}.{}.svc.{domain}",
            port.0,
            subset.map_or_else(|| "_".to_string(), |s| format!("{s}_")),
            service.name,
            service.namespace
        ),
        Addressed::Direct => format!("direct_.{}_.podmesh", direct_port.0),
    }
}

/// The reverse of [`server_name`]; `None` for any other name.
pub fn addressed_from_sni(sni: &str) -> Option<Addressed> {
    let mut labels = sni.split('.');
    match labels.next()? {
        "direct_" => Some(Addressed::Direct),
        "outbound_" => {
            let port = labels.next()?.strip_suffix('_')?.parse().ok()?;
            let _subset = labels.next()?.strip_suffix('_')?;
            let name = labels.next()?;
            let namespace = labels.next()?;
            (labels.next()? == "svc")
                .then(|| Addressed::Service { service: ObjectKey::new(namespace, name), port: ServicePort(port) })
        }
        _ => None,
    }
}

/// What a buffered ClientHello says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// A mesh client (it offers [`MESH_ALPN`]).
    Mesh,
    /// Someone else's TLS (or not a valid ClientHello): the application's business.
    Other,
}

pub fn client_hello(buf: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = buf;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) | Err(_) => return Hello::Other,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(None) => Hello::Incomplete,
        Ok(Some(accepted)) => {
            let mesh = accepted.client_hello().alpn().is_some_and(|mut p| p.any(|p| p == MESH_ALPN));
            if mesh { Hello::Mesh } else { Hello::Other }
        }
        Err(_) => Hello::Other,
    }
}

/// The sidecar's certificates and the rustls configs made from them, replaced whole on rotation.
#[derive(Debug)]
pub struct Tls {
    creds: ArcSwap<Credentials>,
    server: ArcSwap<rustls::ServerConfig>,
    clients: Mutex<HashMap<Identity, Arc<rustls::ClientConfig>>>,
}

impl Tls {
    pub fn new(creds: Credentials) -> Result<Self, podmesh_identity::Error> {
        let server = creds.server_config(&[MESH_ALPN])?;
        Ok(Self {
            creds: ArcSwap::from_pointee(creds),
            server: ArcSwap::new(server),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// New certificates (rotation): new handshakes use them; established connections are unaffected.
    pub fn update(&self, creds: Credentials) -> Result<(), podmesh_identity::Error> {
        let server = creds.server_config(&[MESH_ALPN])?;
        self.creds.store(Arc::new(creds));
        self.server.store(server);
        self.clients.lock().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }

    pub fn identity(&self) -> Identity {
        self.creds.load().identity().clone()
    }

    /// Refuses once this sidecar's certificate has expired: mTLS is never downgraded to plaintext, so nothing is
    /// sent until new certificates arrive (checked before dialing, so peers see no connection at all).
    pub fn check_unexpired(&self) -> io::Result<()> {
        if self.creds.load().is_expired(std::time::SystemTime::now()) {
            return Err(io::Error::other("this sidecar's certificate has expired; refusing to open mTLS"));
        }
        Ok(())
    }

    /// The certificates in force.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.creds.load_full()
    }

    fn client_config(&self, expected: &Identity) -> io::Result<Arc<rustls::ClientConfig>> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(expected) {
            return Ok(Arc::clone(c));
        }
        let config = self.creds.load().client_config(expected, &[MESH_ALPN]).map_err(io::Error::other)?;
        clients.insert(expected.clone(), Arc::clone(&config));
        Ok(config)
    }

    /// Client side: wraps `stream` in mesh mTLS, requiring the server to be `expected`.
    pub async fn connect<S: crate::io::Io>(
        &self,
        stream: S,
        expected: &Identity,
        sni: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>> {
        self.check_unexpired()?;
        let name = ServerName::try_from(sni.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        TlsConnector::from(self.client_config(expected)?).connect(name, stream).await
    }

    /// Server side: completes a mesh handshake whose ClientHello is already buffered in `stream`.
    pub async fn accept(
        &self,
        stream: Prefixed<TcpStream>,
    ) -> io::Result<(tokio_rustls::server::TlsStream<Prefixed<TcpStream>>, Peer)> {
        let tls = TlsAcceptor::from(self.server.load_full()).accept(stream).await?;
        let conn = tls.get_ref().1;
        let identity = podmesh_identity::peer_identity(conn.peer_certificates().unwrap_or_default())
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        let addressed = conn.server_name().and_then(addressed_from_sni).unwrap_or(Addressed::Direct);
        Ok((tls, Peer { identity, addressed }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sni_round_trips_how_the_destination_was_addressed() {
        let svc = Addressed::Service { service: ObjectKey::new("shop", "web"), port: ServicePort(80) };
        let sni = server_name(&svc, None, TargetPort(8080), "cluster.local");
        assert_eq!(sni, "outbound_.80_._.web.shop.svc.cluster.local");
        assert!(ServerName::try_from(sni.clone()).is_ok());
        assert_eq!(addressed_from_sni(&sni), Some(svc.clone()));
        let with_subset = server_name(&svc, Some("v1"), TargetPort(8080), "cluster.local");
        assert_eq!(with_subset, "outbound_.80_.v1_.web.shop.svc.cluster.local");
        assert_eq!(addressed_from_sni(&with_subset), Some(svc));
        let direct = server_name(&Addressed::Direct, None, TargetPort(8080), "cluster.local");
        assert!(ServerName::try_from(direct.clone()).is_ok());
        assert_eq!(addressed_from_sni(&direct), Some(Addressed::Direct));
        assert_eq!(addressed_from_sni("example.com"), None);
        assert_eq!(addressed_from_sni("outbound_.x_._.web.shop.svc.cluster.local"), None);
    }
}
