//! R6 reason codes, the side that decided, and the rule ids of SEMANTICS.md — the shared vocabulary of code,
//! logs, metrics and `podmesh explain`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of a request or connection (R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    Ok,
    NoRoute,
    UndeclaredPort,
    MtlsRequired,
    DirectNotHeadless,
    NoHealthyUpstream,
    UpstreamConnectFailure,
    UpstreamReset,
    ProtocolError,
    UnknownDestination,
    Passthrough,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 11] = [
        ReasonCode::Ok,
        ReasonCode::NoRoute,
        ReasonCode::UndeclaredPort,
        ReasonCode::MtlsRequired,
        ReasonCode::DirectNotHeadless,
        ReasonCode::NoHealthyUpstream,
        ReasonCode::UpstreamConnectFailure,
        ReasonCode::UpstreamReset,
        ReasonCode::ProtocolError,
        ReasonCode::UnknownDestination,
        ReasonCode::Passthrough,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Ok => "ok",
            ReasonCode::NoRoute => "no_route",
            ReasonCode::UndeclaredPort => "undeclared_port",
            ReasonCode::MtlsRequired => "mtls_required",
            ReasonCode::DirectNotHeadless => "direct_not_headless",
            ReasonCode::NoHealthyUpstream => "no_healthy_upstream",
            ReasonCode::UpstreamConnectFailure => "upstream_connect_failure",
            ReasonCode::UpstreamReset => "upstream_reset",
            ReasonCode::ProtocolError => "protocol_error",
            ReasonCode::UnknownDestination => "unknown_destination",
            ReasonCode::Passthrough => "passthrough",
        }
    }

    /// The status of the locally generated HTTP response, for codes that produce one. `ok` and `passthrough`
    /// carry the destination's own response; the connection-level codes are a TCP reset even on HTTP.
    pub fn http_status(self) -> Option<u16> {
        match self {
            ReasonCode::NoRoute => Some(404),
            ReasonCode::NoHealthyUpstream | ReasonCode::UpstreamConnectFailure | ReasonCode::UpstreamReset => Some(503),
            ReasonCode::ProtocolError => Some(400),
            ReasonCode::UnknownDestination => Some(502),
            ReasonCode::Ok
            | ReasonCode::Passthrough
            | ReasonCode::UndeclaredPort
            | ReasonCode::MtlsRequired
            | ReasonCode::DirectNotHeadless => None,
        }
    }

    /// The closest Envoy response flag, for people who know Istio's access logs.
    pub fn envoy_flag(self) -> &'static str {
        match self {
            ReasonCode::Ok | ReasonCode::Passthrough | ReasonCode::UnknownDestination => "-",
            ReasonCode::NoRoute
            | ReasonCode::UndeclaredPort
            | ReasonCode::MtlsRequired
            | ReasonCode::DirectNotHeadless => "NR",
            ReasonCode::NoHealthyUpstream => "UH",
            ReasonCode::UpstreamConnectFailure => "UF",
            ReasonCode::UpstreamReset => "UC",
            ReasonCode::ProtocolError => "DPE",
        }
    }

    /// What a client sees (R6), for an HTTP client or a TCP one.
    pub fn client_sees(self, http: bool) -> ClientSees {
        match (self, http) {
            (ReasonCode::Ok | ReasonCode::Passthrough, _) => ClientSees::Response,
            (code, true) => code.http_status().map_or(ClientSees::Reset, ClientSees::Status),
            (_, false) => ClientSees::Reset,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSees {
    /// The application's (or the outside destination's) own response or bytes.
    Response,
    /// A locally generated HTTP response with this status.
    Status(u16),
    /// The connection is reset.
    Reset,
}

impl fmt::Display for ClientSees {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientSees::Response => f.write_str("the destination's own response"),
            ClientSees::Status(s) => write!(f, "HTTP {s}"),
            ClientSees::Reset => f.write_str("connection reset"),
        }
    }
}

/// Which sidecar made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule of SEMANTICS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    R1_1,
    R1_2,
    R1_3,
    R1_4,
    R1_5,
    R2,
    R3_1,
    R3_2,
    R3_3,
    R3_4,
    R3_5,
    R3_6,
    R4_1,
    R4_2,
    R4_3,
    R4_4,
    R4_5,
    R4_6,
    R5,
    R6,
    R7,
    R8,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::R1_1 => "R1.1",
            Rule::R1_2 => "R1.2",
            Rule::R1_3 => "R1.3",
            Rule::R1_4 => "R1.4",
            Rule::R1_5 => "R1.5",
            Rule::R2 => "R2",
            Rule::R3_1 => "R3.1",
            Rule::R3_2 => "R3.2",
            Rule::R3_3 => "R3.3",
            Rule::R3_4 => "R3.4",
            Rule::R3_5 => "R3.5",
            Rule::R3_6 => "R3.6",
            Rule::R4_1 => "R4.1",
            Rule::R4_2 => "R4.2",
            Rule::R4_3 => "R4.3",
            Rule::R4_4 => "R4.4",
            Rule::R4_5 => "R4.5",
            Rule::R4_6 => "R4.6",
            Rule::R5 => "R5",
            Rule::R6 => "R6",
            Rule::R7 => "R7",
            Rule::R8 => "R8",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A refusal: the code, who refused under which rule, what happened and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub reason: ReasonCode,
    pub side: Side,
    pub rule: Rule,
    /// One line: what happened, in the contract's words.
    pub message: String,
    /// One line a person can act on.
    pub fix: String,
}

impl Rejection {
    pub fn new(reason: ReasonCode, side: Side, rule: Rule, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { reason, side, rule, message: message.into(), fix: fix.into() }
    }

    /// The one-line body of the locally generated HTTP response (R6).
    pub fn body(&self) -> String {
        format!("{} ({}, {}): {} Fix: {}\n", self.reason, self.side, self.rule, self.message, self.fix)
    }
}

/// The response header naming the reason code and side of a locally generated response (R6).
pub const REASON_HEADER: &str = "x-podmesh-reason";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r6_table() {
        use ClientSees::*;
        use ReasonCode::*;
        let table = [
            (NoRoute, Status(404), Reset, "NR"),
            (UndeclaredPort, Reset, Reset, "NR"),
            (MtlsRequired, Reset, Reset, "NR"),
            (DirectNotHeadless, Reset, Reset, "NR"),
            (NoHealthyUpstream, Status(503), Reset, "UH"),
            (UpstreamConnectFailure, Status(503), Reset, "UF"),
            (UpstreamReset, Status(503), Reset, "UC"),
            (ProtocolError, Status(400), Reset, "DPE"),
            (UnknownDestination, Status(502), Reset, "-"),
            (Passthrough, Response, Response, "-"),
            (Ok, Response, Response, "-"),
        ];
        assert_eq!(table.len(), ReasonCode::ALL.len());
        for (code, http, tcp, flag) in table {
            assert_eq!(code.client_sees(true), http, "{code}");
            assert_eq!(code.client_sees(false), tcp, "{code}");
            assert_eq!(code.envoy_flag(), flag, "{code}");
            // The wire name is the serde name.
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
        }
    }

    #[test]
    fn a_local_response_body_is_one_line_naming_code_side_rule_and_fix() {
        let r = Rejection::new(
            ReasonCode::NoRoute,
            Side::Source,
            Rule::R3_1,
            "Host \"x\" is no name.",
            "send Host web.shop",
        );
        assert_eq!(r.body(), "no_route (source, R3.1): Host \"x\" is no name. Fix: send Host web.shop\n");
        assert_eq!(r.body().lines().count(), 1);
    }
}
