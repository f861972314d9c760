//! The cluster DNS: answers A, AAAA and SRV queries for the names of the cluster domain as Kubernetes' cluster DNS
//! (the CoreDNS kubernetes plugin) does, from what a [`Records`] knows. It is authoritative for the cluster domain
//! only: every other name is refused, never forwarded, so a pod's resolver falls through to its next server.
//!
//! The message codec (RFC 1035) is written by hand and accepts only what a stub resolver sends: one question, its
//! name written out whole. Responses over UDP fit in 512 bytes, the UDP limit without EDNS (whose OPT record is
//! ignored); answers that do not fit are cut at a whole record and flagged TC so the client retries over TCP.
//!
//! Over TCP (RFC 1035 §4.2.2, RFC 7766) each message is prefixed with its length in two bytes, so answers are whole
//! up to 64 KiB: that is where a name with many addresses is read in full. A client may send several queries on one
//! connection without waiting (pipelining); they are answered one after the other, in order. Connections are what
//! a flood would exhaust, so every wait on one is bounded by an idle timeout and only so many are served at once.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

/// Time to live of every record, in seconds: the CoreDNS kubernetes plugin's default, short so that clients
/// notice pods that come and go.
pub const TTL_SECONDS: u32 = 5;

/// What the cluster knows of one name (an exact, absolute name, lowercase, without the trailing dot).
pub trait Records: Send + Sync {
    /// Addresses of `name` (A and AAAA records), or None when the name does not exist.
    fn addresses(&self, name: &str) -> Option<Vec<IpAddr>>;
    /// SRV records of `name` (`_port._proto.service.ns.svc.<domain>`), or None when it does not exist.
    fn services(&self, name: &str) -> Option<Vec<Srv>>;
    /// The cluster domain, e.g. "cluster.local": names outside it are refused (REFUSED), never forwarded.
    fn domain(&self) -> &str;
}

/// One SRV record (RFC 2782).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share among records of equal priority.
    pub weight: u16,
    /// The port the service listens on.
    pub port: u16,
    /// The host that serves it: an absolute name, with or without the trailing dot.
    pub target: String,
}

/// Without EDNS a client accepts no larger UDP response (RFC 1035 §4.2.1), and EDNS is not implemented.
const UDP_RESPONSE_LIMIT: usize = 512;
/// EDNS clients send queries longer than 512 bytes; they are still read whole and answered within 512 bytes.
const RECEIVE_BUFFER: usize = 4096;
/// A TCP message's length is written in two bytes (RFC 1035 §4.2.2): no query or response can be longer.
const TCP_MESSAGE_LIMIT: usize = u16::MAX as usize;
/// How long a TCP connection may wait on its client (for the next query, the rest of one, or for an answer to be
/// taken) before it is closed. RFC 7766 §6.2.3 advises seconds: each open connection holds memory and a slot.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections served at once; further clients wait in the listen backlog until one closes. Each holds at most
/// a query and a response of 64 KiB, so this bounds the memory a flood of connections can take to some 32 MiB.
const TCP_CONNECTION_LIMIT: usize = 256;

const HEADER_LEN: usize = 12;
/// Wire length of a name, its length octets and final zero included (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 255;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const OPCODE_SHIFT: u32 = 11;
const OPCODE_MASK: u16 = 0xF;
const OPCODE_QUERY: u16 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// The one question of a query.
#[derive(Debug)]
struct Question<'a> {
    /// The name as the client wrote it, echoed byte for byte: resolvers that randomise letter case (the "0x20"
    /// defence against spoofing) check that it comes back unchanged.
    wire_name: &'a [u8],
    /// Its labels, as written.
    labels: Vec<&'a [u8]>,
    qtype: u16,
    qclass: u16,
}

/// The response to one DNS query message, or None when there must be none: the message is shorter than a header,
/// or it is itself a response (answering those would let two servers bounce errors back and forth). Never panics,
/// whatever the input. The response fits in a UDP datagram (512 bytes), cut and flagged TC when the answer does not.
pub fn answer(query: &[u8], records: &dyn Records) -> Option<Vec<u8>> {
    answer_with_limit(query, records, UDP_RESPONSE_LIMIT)
}

/// [`answer`], with responses cut to `limit` bytes rather than the UDP limit.
fn answer_with_limit(query: &[u8], records: &dyn Records, limit: usize) -> Option<Vec<u8>> {
    let header = query.get(..HEADER_LEN)?;
    let id = read_u16(header, 0)?;
    let flags = read_u16(header, 2)?;
    let question_count = read_u16(header, 4)?;
    if flags & FLAG_QR != 0 {
        return None;
    }
    let error = |rcode| Some(Response::new(id, flags, rcode, None).encode(limit));
    if (flags >> OPCODE_SHIFT) & OPCODE_MASK != OPCODE_QUERY {
        return error(Rcode::NotImp);
    }
    if question_count != 1 {
        return error(Rcode::FormErr);
    }
    match parse_question(query) {
        Some(question) => Some(resolve(id, flags, &question, records).encode(limit)),
        None => error(Rcode::FormErr),
    }
}

/// The cluster's names, as the index knows them (`Index::dns_addresses`, `Index::dns_services`). SRV records
/// share the weight equally, as CoreDNS's kubernetes plugin gives them.
impl Records for podmesh_compute::Index {
    fn addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.dns_addresses(name).map(<[IpAddr]>::to_vec)
    }

    fn services(&self, name: &str) -> Option<Vec<Srv>> {
        let records = self.dns_services(name)?;
        let weight = u16::try_from(100 / records.len().max(1)).unwrap_or(100);
        Some(records.into_iter().map(|r| Srv { priority: 0, weight, port: r.port, target: r.target }).collect())
    }

    fn domain(&self) -> &str {
        podmesh_compute::Index::domain(self)
    }
}

/// Answers every datagram received on `socket` with [`answer`], one at a time, until receiving fails in a way that
/// retrying cannot fix; returns that error.
pub async fn serve(socket: UdpSocket, records: Arc<dyn Records>) -> io::Error {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    loop {
        let (length, client) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) if is_transient(&error) => continue,
            Err(error) => return error,
        };
        let Some(query) = buffer.get(..length) else { continue };
        if let Some(response) = answer(query, records.as_ref()) {
            // A client gone away must not stop the others from being answered; a broken socket shows up on the
            // next receive.
            let _ = socket.send_to(&response, client).await;
        }
    }
}

/// Errors a UDP socket reports for one datagram or one peer (on Linux an ICMP port unreachable from an earlier
/// send surfaces as ConnectionRefused on the next receive), after which it keeps working.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// Answers DNS over TCP on every connection accepted on `listener`, each in a task of its own, until accepting fails
/// in a way that retrying cannot fix; returns that error. A connection is closed when the client closes it, sends a
/// length shorter than a header, or leaves it idle for 10 seconds; at most 256 are served at once.
pub async fn serve_tcp(listener: TcpListener, records: Arc<dyn Records>) -> io::Error {
    serve_tcp_with(listener, records, TCP_IDLE_TIMEOUT, TCP_CONNECTION_LIMIT).await
}

/// [`serve_tcp`] with its idle timeout and connection limit as parameters, so that tests need not wait 10 seconds.
async fn serve_tcp_with(
    listener: TcpListener,
    records: Arc<dyn Records>,
    idle_timeout: Duration,
    connection_limit: usize,
) -> io::Error {
    let slots = Arc::new(Semaphore::new(connection_limit));
    loop {
        // A slot is taken before accepting, so that clients beyond the limit wait in the kernel's backlog (and are
        // served once a connection closes) rather than being accepted only to be dropped.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return io::Error::other("the DNS connection limit's semaphore was closed");
        };
        let stream = match listener.accept().await {
            Ok((stream, _client)) => stream,
            Err(error) if is_transient(&error) || error.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(error) => return error,
        };
        // Each answer goes out in one write, but a pipelined client must not wait on the previous one's ACK.
        let _ = stream.set_nodelay(true);
        let records = Arc::clone(&records);
        tokio::spawn(async move {
            answer_connection(stream, records.as_ref(), idle_timeout).await;
            drop(slot);
        });
    }
}

/// Answers length-prefixed queries read from `stream`, in order, each answer written before the next query is read,
/// until the client closes it, sends a length shorter than a header (no query is that short, so the stream is not
/// DNS or has lost its framing), a read or write fails, or a wait on the client takes longer than `idle_timeout`.
/// Never panics, whatever the bytes.
async fn answer_connection<S>(mut stream: S, records: &dyn Records, idle_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut query = Vec::new();
    loop {
        let mut prefix = [0u8; 2];
        if !matches!(tokio::time::timeout(idle_timeout, stream.read_exact(&mut prefix)).await, Ok(Ok(_))) {
            return;
        }
        let length = usize::from(u16::from_be_bytes(prefix));
        if length < HEADER_LEN {
            return;
        }
        query.resize(length, 0);
        if !matches!(tokio::time::timeout(idle_timeout, stream.read_exact(&mut query)).await, Ok(Ok(_))) {
            return;
        }
        // A message that gets no answer (a response) is skipped: the framing still says where the next one starts.
        let Some(response) = answer_with_limit(&query, records, TCP_MESSAGE_LIMIT) else { continue };
        let Ok(response_length) = u16::try_from(response.len()) else { return };
        // One write per answer, prefix included, so that it leaves in as few segments as it can.
        let framed = [&response_length.to_be_bytes()[..], &response].concat();
        if !matches!(tokio::time::timeout(idle_timeout, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..)?.first_chunk().map(|pair| u16::from_be_bytes(*pair))
}

/// The question after the header, or None when it is malformed. Anything after it (an EDNS OPT record) is ignored.
fn parse_question(message: &[u8]) -> Option<Question<'_>> {
    let mut at = HEADER_LEN;
    let mut labels = Vec::new();
    loop {
        let length = *message.get(at)?;
        // The two top bits mark a compression pointer (0b11) or a reserved label type; a question is the first
        // name of a message, so it has nothing to point back to, and refusing pointers rules out loops. The other
        // six bits cap a label at 63 bytes.
        if length & 0xC0 != 0 {
            return None;
        }
        let label_start = at.checked_add(1)?;
        at = label_start.checked_add(usize::from(length))?;
        // Counting the final zero still to come, so an over-long name is refused before reading past it.
        let shortest_total = at.checked_sub(HEADER_LEN)?.checked_add(usize::from(length != 0))?;
        if shortest_total > MAX_NAME_LEN {
            return None;
        }
        if length == 0 {
            break;
        }
        labels.push(message.get(label_start..at)?);
    }
    Some(Question {
        wire_name: message.get(HEADER_LEN..at)?,
        labels,
        qtype: read_u16(message, at)?,
        qclass: read_u16(message, at.checked_add(2)?)?,
    })
}

/// The lookup key of a name: its labels, lowercased, joined by dots. Bytes that a cluster name cannot hold are
/// escaped as in a zone file, so a label holding a dot never reads as two labels.
fn lookup_name(labels: &[&[u8]]) -> String {
    let mut name = String::new();
    for (index, label) in labels.iter().enumerate() {
        if index > 0 {
            name.push('.');
        }
        for &byte in *label {
            let byte = byte.to_ascii_lowercase();
            match byte {
                b'.' | b'\\' => {
                    name.push('\\');
                    name.push(char::from(byte));
                }
                _ if byte.is_ascii_graphic() => name.push(char::from(byte)),
                _ => name.push_str(&format!("\\{byte:03}")),
            }
        }
    }
    name
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether the name's last labels are the domain's, compared label by label (not as strings, so that no escaped
/// dot can pass for a label boundary).
fn within_domain(labels: &[&[u8]], domain: &str) -> bool {
    let domain: Vec<&[u8]> = domain.split('.').map(str::as_bytes).collect();
    labels.len() >= domain.len()
        && labels.iter().rev().zip(domain.iter().rev()).all(|(label, expected)| label.eq_ignore_ascii_case(expected))
}

fn resolve<'q>(id: u16, query_flags: u16, question: &'q Question<'q>, records: &dyn Records) -> Response<'q> {
    let domain = normalize(records.domain());
    if !within_domain(&question.labels, &domain) {
        return Response::new(id, query_flags, Rcode::Refused, Some(question));
    }
    let name = lookup_name(&question.labels);
    let addresses = records.addresses(&name);
    let services = records.services(&name);
    if addresses.is_none() && services.is_none() {
        return Response::new(id, query_flags, Rcode::NxDomain, Some(question)).authoritative();
    }
    let mut response = Response::new(id, query_flags, Rcode::NoError, Some(question)).authoritative();
    if question.qclass != CLASS_IN {
        return response;
    }
    let owner = question.wire_name;
    let of_family = |want_v4: bool| {
        let addresses = addresses.iter().flatten().filter(move |ip| ip.is_ipv4() == want_v4);
        addresses.filter_map(|ip| address_record(owner, *ip))
    };
    match question.qtype {
        TYPE_A => response.answers.extend(of_family(true)),
        TYPE_AAAA => response.answers.extend(of_family(false)),
        TYPE_SRV => {
            let services = services.unwrap_or_default();
            response.answers.extend(services.iter().filter_map(|srv| srv_record(owner, srv)));
            let targets: BTreeSet<String> = services.iter().map(|srv| normalize(&srv.target)).collect();
            for target in targets {
                let (Some(addresses), Some(target_wire)) = (records.addresses(&target), encode_name(&target)) else {
                    continue;
                };
                response.additional.extend(addresses.into_iter().filter_map(|ip| address_record(&target_wire, ip)));
            }
        }
        // Names here hold addresses and services only: any other type exists nowhere, which is NODATA.
        _ => {}
    }
    response
}

/// A name in wire form, uncompressed; None when it cannot be written (an empty label, one over 63 bytes, or over
/// 255 bytes in all).
fn encode_name(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(name.len().saturating_add(2));
    if !name.is_empty() {
        for label in name.split('.') {
            let length = u8::try_from(label.len()).ok().filter(|length| (1..=63).contains(length))?;
            wire.push(length);
            wire.extend_from_slice(label.as_bytes());
        }
    }
    wire.push(0);
    (wire.len() <= MAX_NAME_LEN).then_some(wire)
}

fn record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Option<Vec<u8>> {
    let rdata_length = u16::try_from(rdata.len()).ok()?.to_be_bytes();
    Some(
        [owner, &rtype.to_be_bytes(), &CLASS_IN.to_be_bytes(), &TTL_SECONDS.to_be_bytes(), &rdata_length, rdata]
            .concat(),
    )
}

fn address_record(owner: &[u8], address: IpAddr) -> Option<Vec<u8>> {
    match address {
        IpAddr::V4(v4) => record(owner, TYPE_A, &v4.octets()),
        IpAddr::V6(v6) => record(owner, TYPE_AAAA, &v6.octets()),
    }
}

fn srv_record(owner: &[u8], srv: &Srv) -> Option<Vec<u8>> {
    // RFC 2782: the target is never compressed.
    let target = encode_name(&srv.target)?;
    let rdata = [&srv.priority.to_be_bytes()[..], &srv.weight.to_be_bytes(), &srv.port.to_be_bytes(), &target].concat();
    record(owner, TYPE_SRV, &rdata)
}

/// A response being built: its records are kept encoded and cut to the transport's limit when the message is
/// written.
struct Response<'q> {
    id: u16,
    flags: u16,
    question: Option<&'q Question<'q>>,
    answers: Vec<Vec<u8>>,
    additional: Vec<Vec<u8>>,
}

impl<'q> Response<'q> {
    fn new(id: u16, query_flags: u16, rcode: Rcode, question: Option<&'q Question<'q>>) -> Self {
        let flags = FLAG_QR | (query_flags & FLAG_RD) | rcode as u16;
        Self { id, flags, question, answers: Vec::new(), additional: Vec::new() }
    }

    /// Set only for names of the cluster domain: refusals and format errors speak for no zone.
    fn authoritative(mut self) -> Self {
        self.flags |= FLAG_AA;
        self
    }

    /// The message, at most `limit` bytes long (as long as a header and the question fit, which they always do in
    /// 512 bytes): records that do not fit are left out.
    fn encode(self, limit: usize) -> Vec<u8> {
        let mut body = match self.question {
            Some(question) => {
                [question.wire_name, &question.qtype.to_be_bytes(), &question.qclass.to_be_bytes()].concat()
            }
            None => Vec::new(),
        };
        let room = limit.saturating_sub(HEADER_LEN);
        let (answer_count, truncated) = append_fitting(&mut body, &self.answers, room);
        // Additional records are a courtesy: leaving them out is no truncation (RFC 2181 §9). With answers cut the
        // client retries over TCP, so they would be sent for nothing.
        let additional_count = if truncated { 0 } else { append_fitting(&mut body, &self.additional, room).0 };
        let flags = if truncated { self.flags | FLAG_TC } else { self.flags };
        let question_count = u16::from(self.question.is_some());
        let header = [self.id, flags, question_count, answer_count, 0, additional_count].map(u16::to_be_bytes);
        [header.as_flattened(), &body].concat()
    }
}

/// Appends whole records while `body` stays within `room` bytes: how many went in, and whether some were left out.
fn append_fitting(body: &mut Vec<u8>, records: &[Vec<u8>], room: usize) -> (u16, bool) {
    let mut count = 0u16;
    for record in records {
        if body.len().saturating_add(record.len()) > room || count == u16::MAX {
            return (count, true);
        }
        body.extend_from_slice(record);
        count = count.saturating_add(1);
    }
    (count, false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const TYPE_TXT: u16 = 16;
    const DOMAIN: &str = "cluster.local";
    const PG: &str = "_pg._tcp.db.default.svc.cluster.local";
    const DB_0: &str = "db-0.db.default.svc.cluster.local";
    const DB_1: &str = "db-1.db.default.svc.cluster.local";

    #[derive(Debug, Default)]
    struct Cluster {
        addresses: BTreeMap<String, Vec<IpAddr>>,
        services: BTreeMap<String, Vec<Srv>>,
    }

    impl Records for Cluster {
        fn addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
            self.addresses.get(name).cloned()
        }
        fn services(&self, name: &str) -> Option<Vec<Srv>> {
            self.services.get(name).cloned()
        }
        fn domain(&self) -> &str {
            DOMAIN
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, last))
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last))
    }

    fn srv(target: &str) -> Srv {
        Srv { priority: 0, weight: 50, port: 5432, target: target.to_string() }
    }

    fn cluster() -> Cluster {
        let mut cluster = Cluster::default();
        let mut add = |name: &str, ips: Vec<IpAddr>| cluster.addresses.insert(format!("{name}.{DOMAIN}"), ips);
        add("web.default.svc", vec![v4(10)]);
        add("dual.default.svc", vec![v4(11), v6(0x11)]);
        add("v6only.default.svc", vec![v6(0x12)]);
        add("big.default.svc", (0..40).map(v4).collect());
        add("db-0.db.default.svc", vec![v4(20)]);
        add("db-1.db.default.svc", vec![v4(21), v6(0x21)]);
        // A target with a trailing dot, and one whose addresses are unknown.
        let targets = [DB_0, &format!("{DB_1}."), "gone.cluster.local"].map(srv);
        cluster.services.insert(PG.to_string(), targets.to_vec());
        cluster
    }

    /// A name in wire form, built here rather than by the code under test.
    fn wire(name: &str) -> Vec<u8> {
        let labels = name.split('.').filter(|label| !label.is_empty());
        labels
            .flat_map(|label| [vec![u8::try_from(label.len()).unwrap()], label.as_bytes().to_vec()].concat())
            .chain([0])
            .collect()
    }

    fn message(id: u16, flags: u16, wire_names: &[&[u8]], qtype: u16) -> Vec<u8> {
        let count = u16::try_from(wire_names.len()).unwrap();
        let mut message: Vec<u8> = [id, flags, count, 0, 0, 0].iter().flat_map(|field| field.to_be_bytes()).collect();
        for name in wire_names {
            message.extend_from_slice(&[name, &qtype.to_be_bytes()[..], &CLASS_IN.to_be_bytes()].concat());
        }
        message
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        message(0x1234, FLAG_RD, &[&wire(name)], qtype)
    }

    /// A decoded record's data, whose shape says its type; records are (owner name, TTL, data).
    #[derive(Debug, Clone, PartialEq)]
    enum Data {
        Address(IpAddr),
        Service(Srv),
        Other(Vec<u8>),
    }

    #[derive(Debug)]
    struct Decoded {
        id: u16,
        flags: u16,
        questions: Vec<(String, u16)>,
        answers: Vec<(String, u32, Data)>,
        additional: Vec<(String, u32, Data)>,
    }

    impl Decoded {
        fn rcode(&self) -> u16 {
            self.flags & 0xF
        }
        fn has(&self, flag: u16) -> bool {
            self.flags & flag != 0
        }
        fn answer_data(&self) -> Vec<Data> {
            self.answers.iter().map(|(_, _, data)| data.clone()).collect()
        }
    }

    struct Reader<'a>(&'a [u8], usize);

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let taken = self.0.get(self.1..self.1 + n)?;
            self.1 += n;
            Some(taken)
        }
        fn u16(&mut self) -> Option<u16> {
            Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        /// Uncompressed names only, as the server writes them.
        fn name(&mut self) -> Option<String> {
            let mut labels = Vec::new();
            loop {
                match usize::from(*self.take(1)?.first()?) {
                    0 => return Some(labels.join(".")),
                    length => labels.push(String::from_utf8_lossy(self.take(length)?).into_owned()),
                }
            }
        }
        fn record(&mut self) -> Option<(String, u32, Data)> {
            let (name, rtype, _class) = (self.name()?, self.u16()?, self.u16()?);
            let ttl = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
            let rdata_length = usize::from(self.u16()?);
            let end = self.1 + rdata_length;
            let data = match rtype {
                TYPE_A => Data::Address(IpAddr::from(<[u8; 4]>::try_from(self.take(4)?).ok()?)),
                TYPE_AAAA => Data::Address(IpAddr::from(<[u8; 16]>::try_from(self.take(16)?).ok()?)),
                TYPE_SRV => {
                    let (priority, weight, port) = (self.u16()?, self.u16()?, self.u16()?);
                    Data::Service(Srv { priority, weight, port, target: self.name()? })
                }
                _ => Data::Other(self.take(rdata_length)?.to_vec()),
            };
            (self.1 == end).then_some((name, ttl, data))
        }
    }

    /// Reads a response; None when it is malformed or has bytes left over.
    fn decode(bytes: &[u8]) -> Option<Decoded> {
        let mut reader = Reader(bytes, 0);
        let (id, flags) = (reader.u16()?, reader.u16()?);
        let counts = [reader.u16()?, reader.u16()?, reader.u16()?, reader.u16()?];
        let mut questions = Vec::new();
        for _ in 0..counts[0] {
            let (name, qtype, _class) = (reader.name()?, reader.u16()?, reader.u16()?);
            questions.push((name, qtype));
        }
        let mut section = |count| (0..count).map(|_| reader.record()).collect::<Option<Vec<_>>>();
        let (answers, _authority, additional) = (section(counts[1])?, section(counts[2])?, section(counts[3])?);
        (reader.1 == bytes.len()).then_some(Decoded { id, flags, questions, answers, additional })
    }

    fn ask(message: &[u8]) -> Decoded {
        let response = answer(message, &cluster()).expect("an answer");
        assert!(response.len() <= UDP_RESPONSE_LIMIT, "{} bytes", response.len());
        let decoded = decode(&response).expect("a well-formed response");
        assert!(decoded.answers.iter().chain(&decoded.additional).all(|(_, ttl, _)| *ttl == 5), "{decoded:?}");
        decoded
    }

    fn assert_rcode(response: &Decoded, id: u16, rcode: Rcode) {
        assert_eq!((response.id, response.rcode()), (id, rcode as u16), "{response:?}");
    }

    #[test]
    fn address_queries_get_the_addresses_of_their_family_in_an_authoritative_answer() {
        let name = "dual.default.svc.cluster.local";
        for (qtype, address) in [(TYPE_A, v4(11)), (TYPE_AAAA, v6(0x11))] {
            let response = ask(&query(name, qtype));
            assert_rcode(&response, 0x1234, Rcode::NoError);
            assert!(response.has(FLAG_QR) && response.has(FLAG_AA) && response.has(FLAG_RD) && !response.has(FLAG_TC));
            assert_eq!(response.questions, vec![(name.to_string(), qtype)]);
            assert_eq!(response.answers, vec![(name.to_string(), TTL_SECONDS, Data::Address(address))]);
        }
    }

    #[test]
    fn existing_names_without_records_of_the_type_asked_are_nodata() {
        let web = "web.default.svc.cluster.local";
        let cases = [("v6only.default.svc.cluster.local", TYPE_A), (web, TYPE_AAAA), (web, TYPE_TXT), (web, TYPE_SRV)];
        for (name, qtype) in cases.into_iter().chain([(PG, TYPE_A), (PG, 15)]) {
            let response = ask(&query(name, qtype));
            assert_rcode(&response, 0x1234, Rcode::NoError);
            assert!(response.has(FLAG_AA) && response.answers.is_empty(), "{name} {qtype}");
        }
    }

    #[test]
    fn unknown_names_of_the_domain_are_nxdomain() {
        for qtype in [TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_TXT] {
            let response = ask(&query("nope.default.svc.cluster.local", qtype));
            assert_rcode(&response, 0x1234, Rcode::NxDomain);
            assert!(response.has(FLAG_AA) && response.answers.is_empty());
        }
    }

    #[test]
    fn srv_query_lists_the_records_and_the_known_targets_addresses_as_additional() {
        let response = ask(&query(PG, TYPE_SRV));
        assert_rcode(&response, 0x1234, Rcode::NoError);
        let targets =
            [DB_0, DB_1, "gone.cluster.local"].map(|target| (PG.to_string(), TTL_SECONDS, Data::Service(srv(target))));
        assert_eq!(response.answers, targets.to_vec());
        let additional = [(DB_0, v4(20)), (DB_1, v4(21)), (DB_1, v6(0x21))];
        assert_eq!(
            response.additional,
            additional.map(|(name, ip)| (name.to_string(), TTL_SECONDS, Data::Address(ip)))
        );
    }

    #[test]
    fn names_outside_the_cluster_domain_are_refused() {
        for name in ["example.com", "cluster.local.example.com", "evilcluster.local", "local", "."] {
            let response = ask(&query(name, TYPE_A));
            assert_rcode(&response, 0x1234, Rcode::Refused);
            assert!(!response.has(FLAG_AA) && response.answers.is_empty() && response.questions.len() == 1, "{name}");
        }
    }

    #[test]
    fn names_match_whatever_their_case_and_are_echoed_as_written() {
        let response = ask(&query("WeB.Default.SVC.Cluster.Local.", TYPE_A));
        assert_rcode(&response, 0x1234, Rcode::NoError);
        assert_eq!(response.questions[0].0, "WeB.Default.SVC.Cluster.Local");
        assert_eq!(
            response.answers,
            vec![("WeB.Default.SVC.Cluster.Local".to_string(), TTL_SECONDS, Data::Address(v4(10)))]
        );
    }

    #[test]
    fn a_label_holding_a_dot_is_not_two_labels() {
        let name = [&[11][..], b"web.default", &wire("svc.cluster.local")].concat();
        assert_rcode(&ask(&message(7, 0, &[&name], TYPE_A)), 7, Rcode::NxDomain);
    }

    #[test]
    fn two_questions_or_none_are_a_format_error() {
        let (web, dual) = (wire("web.default.svc.cluster.local"), wire("dual.default.svc.cluster.local"));
        for names in [&[&web[..], &dual[..]][..], &[]] {
            let response = ask(&message(0xBEEF, 0, names, TYPE_A));
            assert_rcode(&response, 0xBEEF, Rcode::FormErr);
            assert!(response.questions.is_empty() && response.answers.is_empty());
        }
    }

    #[test]
    fn a_truncated_message_is_a_format_error_once_its_header_is_whole() {
        let message = query("web.default.svc.cluster.local", TYPE_A);
        for cut in 0..HEADER_LEN {
            assert!(answer(&message[..cut], &cluster()).is_none(), "cut at {cut}");
        }
        for cut in HEADER_LEN..message.len() {
            assert_rcode(&ask(&message[..cut]), 0x1234, Rcode::FormErr);
        }
    }

    #[test]
    fn other_opcodes_are_not_implemented_and_responses_never_answered() {
        let name = wire("web.default.svc.cluster.local");
        for opcode in [1u16, 2, 4, 5, 15] {
            assert_rcode(&ask(&message(9, opcode << OPCODE_SHIFT, &[&name], TYPE_A)), 9, Rcode::NotImp);
        }
        assert!(answer(&message(9, FLAG_QR, &[&name], TYPE_A), &cluster()).is_none());
    }

    #[test]
    fn compression_pointers_and_reserved_label_types_in_the_question_are_a_format_error() {
        // A 64-byte label would read whole if its length octet (0b01_000000, a reserved label type) were taken
        // as a length.
        let label_of_64 = [&[64][..], &[b'a'; 64], &[0]].concat();
        let names: [&[u8]; 5] =
            [&[0xC0, 12], &[3, b'w', b'e', b'b', 0xC0, 12], &[0xC0, 14, 0xC0, 12], &[0x80, 0], &label_of_64];
        for name in names {
            assert_rcode(&ask(&message(0x4242, 0, &[name], TYPE_A)), 0x4242, Rcode::FormErr);
        }
    }

    #[test]
    fn names_up_to_255_bytes_are_read_and_longer_ones_are_a_format_error() {
        // Three 63-byte labels and "cluster.local" take 1 + 3 * 64 + 8 + 6 + 1 = 208 bytes; the first label pads.
        let name_of = |wire_length: usize| {
            format!("{}.{long}.{long}.{long}.{DOMAIN}", "a".repeat(wire_length - 208), long = "b".repeat(63))
        };
        assert_rcode(&ask(&query(&name_of(255), TYPE_A)), 0x1234, Rcode::NxDomain);
        assert_rcode(&ask(&query(&name_of(256), TYPE_A)), 0x1234, Rcode::FormErr);
    }

    #[test]
    fn answers_beyond_512_bytes_are_cut_at_a_whole_record_and_flagged() {
        let name = "big.default.svc.cluster.local";
        let plain = query(name, TYPE_A);
        // The same with an EDNS OPT record (root name, type 41, 4096-byte payload): ignored, still 512 bytes.
        let edns = [&plain[..11], &[1], &plain[12..], &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]].concat();
        for message in [plain.clone(), edns] {
            let response = ask(&message);
            assert_rcode(&response, 0x1234, Rcode::NoError);
            assert!(response.has(FLAG_TC));
            let record_length = wire(name).len() + 10 + 4;
            let fitting = (UDP_RESPONSE_LIMIT - plain.len()) / record_length;
            assert_eq!(
                response.answer_data(),
                (0..40).map(|last| Data::Address(v4(last))).take(fitting).collect::<Vec<_>>()
            );
        }
    }

    fn valid_query() -> impl Strategy<Value = (u16, bool, Vec<u8>)> {
        let labels = prop::collection::vec("[a-zA-Z0-9_-]{1,63}", 0..4);
        let suffix = prop::sample::select(vec!["", "cluster.local", "default.svc.cluster.local", "example.com"]);
        let qtype = prop::sample::select(vec![TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_TXT, 255]);
        (any::<u16>(), any::<bool>(), labels, suffix, qtype).prop_map(|(id, rd, labels, suffix, qtype)| {
            let name = labels.into_iter().chain([suffix.to_string()]).collect::<Vec<_>>().join(".");
            (id, rd, message(id, if rd { FLAG_RD } else { 0 }, &[&wire(&name)], qtype))
        })
    }

    /// A response, when there is one, fits in 512 bytes, parses, and carries the query's ID.
    fn check_response(query: &[u8], response: Option<&[u8]>) -> Result<Option<Decoded>, TestCaseError> {
        let Some(response) = response else { return Ok(None) };
        prop_assert!(response.len() <= UDP_RESPONSE_LIMIT);
        let decoded = decode(response);
        prop_assert!(decoded.is_some(), "unparsable response {response:?}");
        prop_assert_eq!(decoded.as_ref().map(|decoded| decoded.id), Some(u16::from_be_bytes([query[0], query[1]])));
        Ok(decoded)
    }

    proptest! {
        #[test]
        fn any_bytes_get_a_well_formed_response_or_none(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
            check_response(&bytes, answer(&bytes, &cluster()).as_deref())?;
        }

        #[test]
        fn corrupted_queries_get_a_well_formed_response_or_none(
            (_, _, mut message) in valid_query(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            for (index, byte) in flips {
                let at = index.index(message.len());
                message[at] = byte;
            }
            check_response(&message, answer(&message, &cluster()).as_deref())?;
        }

        #[test]
        fn a_valid_query_is_answered_with_its_id((id, rd, message) in valid_query()) {
            let response = answer(&message, &cluster());
            prop_assert!(response.is_some());
            let decoded = check_response(&message, response.as_deref())?.unwrap();
            prop_assert_eq!(decoded.id, id);
            prop_assert_eq!((decoded.has(FLAG_QR), decoded.has(FLAG_RD)), (true, rd));
            prop_assert!([0, 3, 5].contains(&decoded.rcode()), "rcode {}", decoded.rcode());
        }
    }

    async fn exchange(client: &UdpSocket, server: std::net::SocketAddr, message: &[u8]) -> Decoded {
        client.send_to(message, server).await.unwrap();
        let mut buffer = [0u8; RECEIVE_BUFFER];
        let received = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer)).await;
        let (length, from) = received.expect("an answer within 5 s").unwrap();
        assert_eq!(from, server);
        decode(&buffer[..length]).unwrap()
    }

    #[tokio::test]
    async fn serve_answers_queries_over_loopback_and_survives_garbage() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = socket.local_addr().unwrap();
        let task = tokio::spawn(serve(socket, Arc::new(cluster())));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        // Too short to answer: the next query's answer must be the next datagram back.
        client.send_to(&[0xFF; 3], server).await.unwrap();
        let response = exchange(&client, server, &query("dual.default.svc.cluster.local", TYPE_A)).await;
        assert_rcode(&response, 0x1234, Rcode::NoError);
        assert_eq!(response.answer_data(), vec![Data::Address(v4(11))]);

        assert_rcode(&exchange(&client, server, &query("example.com", TYPE_A)).await, 0x1234, Rcode::Refused);
        assert!(!task.is_finished());
        task.abort();
    }

    /// A message with its two-byte length prefix, as sent over TCP.
    fn framed(message: &[u8]) -> Vec<u8> {
        [&u16::try_from(message.len()).unwrap().to_be_bytes()[..], message].concat()
    }

    /// The length-prefixed messages of a TCP stream's bytes, which must hold nothing else.
    fn unframe(mut bytes: &[u8]) -> Vec<&[u8]> {
        let mut messages = Vec::new();
        while let Some((prefix, rest)) = bytes.split_first_chunk::<2>() {
            let (message, rest) = rest.split_at(usize::from(u16::from_be_bytes(*prefix)));
            messages.push(message);
            bytes = rest;
        }
        assert!(bytes.is_empty(), "{} bytes after the last whole message", bytes.len());
        messages
    }

    async fn tcp_server(idle_timeout: Duration, connection_limit: usize) -> (std::net::SocketAddr, Server) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(serve_tcp_with(listener, Arc::new(cluster()), idle_timeout, connection_limit));
        (address, Server(task))
    }

    /// The server's task, aborted when the test ends, whether it passes or not.
    struct Server(tokio::task::JoinHandle<io::Error>);

    impl Drop for Server {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// The next response on `stream`, or None when the server closes the connection before sending one.
    async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<Decoded> {
        let mut prefix = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut prefix)).await;
        read.expect("a response or the connection closed within 5 s").ok()?;
        let mut response = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut response)).await.unwrap().unwrap();
        Some(decode(&response).expect("a well-formed response"))
    }

    /// Whether the server closes the connection (or resets it) within 5 s, without sending anything first.
    async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn answers_cut_for_udp_come_whole_over_tcp() {
        let big = query("big.default.svc.cluster.local", TYPE_A);
        let all: Vec<Data> = (0..40).map(|last| Data::Address(v4(last))).collect();
        let over_udp = ask(&big);
        assert!(over_udp.has(FLAG_TC) && over_udp.answers.len() < all.len(), "{over_udp:?}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _server = Server(tokio::spawn(serve_tcp(listener, Arc::new(cluster()))));
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(&framed(&big)).await.unwrap();
        let over_tcp = read_response(&mut stream).await.expect("an answer");
        assert_rcode(&over_tcp, 0x1234, Rcode::NoError);
        assert!(over_tcp.has(FLAG_AA) && !over_tcp.has(FLAG_TC), "{over_tcp:?}");
        assert_eq!(over_tcp.answer_data(), all);
        // The same cut, were the answer to outgrow even a TCP message.
        let cut = decode(&answer_with_limit(&big, &cluster(), 600).unwrap()).unwrap();
        assert!(cut.has(FLAG_TC) && cut.answers.len() > over_udp.answers.len() && cut.answers.len() < all.len());
    }

    #[tokio::test]
    async fn pipelined_queries_are_answered_in_order_and_responses_skipped() {
        let (address, _server) = tcp_server(Duration::from_secs(10), 4).await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (big, web) = (wire("big.default.svc.cluster.local"), wire("web.default.svc.cluster.local"));
        let messages = [
            message(1, 0, &[&big], TYPE_A),
            // A response gets none, and the next query is still read from where it starts.
            message(2, FLAG_QR, &[&web], TYPE_A),
            message(3, 0, &[&wire("example.com")], TYPE_A),
            message(4, 0, &[&web], TYPE_A),
        ];
        stream.write_all(&messages.iter().flat_map(|message| framed(message)).collect::<Vec<_>>()).await.unwrap();
        stream.shutdown().await.unwrap();
        let first = read_response(&mut stream).await.unwrap();
        assert_rcode(&first, 1, Rcode::NoError);
        assert_eq!(first.answers.len(), 40);
        assert_rcode(&read_response(&mut stream).await.unwrap(), 3, Rcode::Refused);
        let last = read_response(&mut stream).await.unwrap();
        assert_rcode(&last, 4, Rcode::NoError);
        assert_eq!(last.answer_data(), [Data::Address(v4(10))]);
        // The client has closed its side: so does the server, once everything is answered.
        assert!(read_response(&mut stream).await.is_none());
    }

    #[tokio::test]
    async fn garbage_and_lengths_shorter_than_a_header_close_the_connection() {
        let (address, server) = tcp_server(Duration::from_millis(200), 4).await;
        let web = framed(&query("web.default.svc.cluster.local", TYPE_A));
        // (bytes sent, whether the client then closes its side)
        let cases: [(&[u8], bool); 7] = [
            (&[0, 0], false),
            (&[0, 11, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0], false),
            (&[0], true),
            (&web[..web.len() - 1], true),
            // The length says more bytes are coming than ever do: the idle timeout ends it.
            (b"GET / HTTP/1.1\r\nHost: dns\r\n\r\n", false),
            (&[0xFF; 70_000], false),
            (&[], true),
        ];
        for (bytes, close) in cases {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            if close {
                stream.shutdown().await.unwrap();
            }
            assert!(closed_by_server(&mut stream).await, "{:?}", &bytes[..bytes.len().min(16)]);
        }
        // A query answered before the garbage still is.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(&[&web[..], &[0, 3, 1, 2, 3]].concat()).await.unwrap();
        assert_rcode(&read_response(&mut stream).await.unwrap(), 0x1234, Rcode::NoError);
        assert!(closed_by_server(&mut stream).await);
        assert!(!server.0.is_finished());
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_timeout() {
        let idle = Duration::from_millis(300);
        let (address, _server) = tcp_server(idle, 4).await;
        let web = framed(&query("web.default.svc.cluster.local", TYPE_A));
        // Silent from the start; silent after a query answered; silent halfway through a query.
        let sent: [&[u8]; 3] = [&[], &web, &web[..5]];
        for bytes in sent {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            if bytes == web {
                assert!(read_response(&mut stream).await.is_some());
            }
            let started = tokio::time::Instant::now();
            assert!(closed_by_server(&mut stream).await, "{bytes:?}");
            assert!(started.elapsed() >= idle.mul_f32(0.9), "closed after {:?}", started.elapsed());
        }
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_one_to_close() {
        let (address, _server) = tcp_server(Duration::from_secs(10), 1).await;
        let web = framed(&query("web.default.svc.cluster.local", TYPE_A));
        let mut first = tokio::net::TcpStream::connect(address).await.unwrap();
        first.write_all(&web).await.unwrap();
        assert!(read_response(&mut first).await.is_some());

        let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
        second.write_all(&web).await.unwrap();
        let mut prefix = [0u8; 2];
        let waited = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut prefix)).await;
        assert!(waited.is_err(), "answered beyond the limit: {waited:?}");
        drop(first);
        assert_rcode(&read_response(&mut second).await.unwrap(), 0x1234, Rcode::NoError);
    }

    /// Runs one connection over an in-memory stream: `bytes` sent, then the client's side closed. Returns what the
    /// server wrote before ending the connection, which it must do on its own.
    fn converse(bytes: &[u8]) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let records = cluster();
            let client_side = async {
                client.write_all(bytes).await.unwrap();
                client.shutdown().await.unwrap();
                let mut received = Vec::new();
                client.read_to_end(&mut received).await.unwrap();
                received
            };
            let serving = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::join!(answer_connection(server, &records, Duration::from_secs(5)), client_side).1
            });
            serving.await.expect("the connection ends within 5 s")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_bytes_on_a_connection_get_well_formed_answers_and_an_end(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            queries in prop::collection::vec(valid_query(), 0..4),
        ) {
            // Valid queries first, so that garbage does not always end the connection before anything is answered.
            let sent: Vec<u8> = queries.iter().flat_map(|(_, _, message)| framed(message)).chain(bytes).collect();
            let received = converse(&sent);
            let responses = unframe(&received);
            prop_assert!(responses.len() >= queries.len());
            for (index, response) in responses.iter().enumerate() {
                let decoded = decode(response);
                prop_assert!(decoded.is_some(), "unparsable response {response:?}");
                if let (Some((id, _, _)), Some(decoded)) = (queries.get(index), decoded) {
                    prop_assert_eq!(decoded.id, *id);
                }
            }
        }
    }

    /// The cluster's own names, from the index the control plane serves: the StatefulSet example's headless
    /// Service (each peer's own name, SRV per peer with the peer's port), its ClusterIP Service (SRV to the
    /// Service), and names that do not exist.
    #[test]
    fn the_index_answers_service_pod_and_srv_names() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let sources = [podmesh_model::Source::Path(root.join("statefulset-peers"))];
        let index = podmesh_compute::Index::new(podmesh_model::load(&sources).unwrap().cluster);
        let ask = |name: &str, qtype| decode(&answer(&query(name, qtype), &index).unwrap()).unwrap();
        let pods: BTreeMap<String, IpAddr> = index
            .cluster()
            .pods
            .values()
            .map(|p| (format!("{}.kv.store.svc.cluster.local", p.effective_hostname()), p.ip))
            .collect();
        assert_eq!(pods.len(), 3, "{pods:?}");
        for (name, ip) in &pods {
            assert_eq!(ask(name, TYPE_A).answer_data(), [Data::Address(*ip)], "{name}");
        }
        // The headless Service: every peer's address (publishNotReadyAddresses), sorted.
        let mut all: Vec<Data> = pods.values().map(|ip| Data::Address(*ip)).collect();
        all.sort_by_key(|d| format!("{d:?}"));
        let mut got = ask("kv.store.svc.cluster.local", TYPE_A).answer_data();
        got.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(got, all);
        // SRV for a named port: one record per peer, to its own name, weights shared.
        let peers = ask("_tcp-peer._tcp.kv.store.svc.cluster.local", TYPE_SRV);
        let mut targets: Vec<(u16, u16, String)> = peers
            .answer_data()
            .into_iter()
            .map(|d| match d {
                Data::Service(s) => (s.port, s.weight, s.target),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        let want: Vec<(u16, u16, String)> = pods.keys().map(|n| (2380, 33, n.clone())).collect();
        assert_eq!(targets, want);
        assert_eq!(peers.additional.len(), 3, "each target's address comes along: {peers:?}");
        // The ClusterIP Service: its address, and SRV to its own name and port.
        let client = index.cluster().services.values().find(|s| &*s.key.name == "kv-client").unwrap();
        let a = ask("kv-client.store.svc.cluster.local", TYPE_A);
        assert_eq!(a.answer_data(), [Data::Address(client.cluster_ips[0])]);
        let srv = ask("_http._tcp.kv-client.store.svc.cluster.local", TYPE_SRV).answer_data();
        let to_service =
            Srv { priority: 0, weight: 100, port: 2379, target: "kv-client.store.svc.cluster.local".into() };
        assert_eq!(srv, [Data::Service(to_service)]);
        // No such port, protocol, Service or pod: NXDOMAIN.
        for name in [
            "_nope._tcp.kv.store.svc.cluster.local",
            "_tcp-peer._udp.kv.store.svc.cluster.local",
            "nope.store.svc.cluster.local",
            "kv-9.kv.store.svc.cluster.local",
        ] {
            assert_eq!(ask(name, TYPE_A).rcode(), Rcode::NxDomain as u16, "{name}");
        }
    }
}
