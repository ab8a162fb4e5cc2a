//! Identifiers. A `ServerId` is the root of every path and container name a
//! worker touches, so it is a validated positive integer and nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A virtual server's id: a positive integer that fits in SQLite's signed 64-bit rowid.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServerId(u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a server id is a positive integer below 2^63, not {0:?}")]
pub struct InvalidServerId(pub String);

impl ServerId {
    pub fn new(raw: i64) -> Result<Self, InvalidServerId> {
        if raw > 0 { Ok(Self(raw as u64)) } else { Err(InvalidServerId(raw.to_string())) }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The value as SQLite and PostgreSQL store it.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }
}

impl FromStr for ServerId {
    type Err = InvalidServerId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Digits only: no sign, no whitespace, no leading "+", no leading
        // zero, so the id in a path or a subject is exactly what was
        // validated, and one server has one spelling.
        if s.is_empty() || s.len() > 19 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidServerId(s.to_owned()));
        }
        let raw: i64 = s.parse().map_err(|_| InvalidServerId(s.to_owned()))?;
        Self::new(raw).map_err(|_| InvalidServerId(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ServerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        ServerId::new(raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A job's id. It is also the `Nats-Msg-Id` of the job's message, so
/// JetStream drops a second publish of the same job.
// Its schema is spelled out: utoipa's `uuid` feature would build `uuid` a
// second time (with other features) for one string format.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = "uuid"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// A stable id for a message published without one (by hand, with the
    /// NATS CLI): the same stream sequence always yields the same id, so a
    /// redelivery is recognised as the same job.
    pub fn for_message(stream: &str, stream_sequence: u64) -> Self {
        const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2f55_0c4e_4c1b_9a43_7a5e_51d0_f1ee);
        Self(Uuid::new_v5(&NAMESPACE, format!("{stream}:{stream_sequence}").as_bytes()))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a job id is a UUID in its canonical form (lowercase, hyphenated), not {0:?}")]
pub struct InvalidJobId(pub String);

impl JobId {
    /// Only the form this crate prints (`Display`): lowercase, hyphenated.
    /// For ids from outside (the API's paths), so one job has one spelling;
    /// `FromStr` stays lenient for payloads written by hand.
    pub fn parse_canonical(s: &str) -> Result<Self, InvalidJobId> {
        match Uuid::try_parse(s) {
            Ok(id) if id.hyphenated().to_string() == s => Ok(Self(id)),
            _ => Err(InvalidJobId(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_plain_positive_integers() {
        assert_eq!("42".parse::<ServerId>().unwrap().get(), 42);
        assert_eq!("10".parse::<ServerId>().unwrap().get(), 10);
        for bad in ["0", "00", "01", "007", "-1", "+1", " 1", "1 ", "", "1e3", "../1", "99999999999999999999"] {
            assert!(bad.parse::<ServerId>().is_err(), "{bad:?} was accepted");
        }
        assert!(serde_json::from_str::<ServerId>("-5").is_err());
        assert_eq!(serde_json::from_str::<ServerId>("7").unwrap().get(), 7);
    }

    #[test]
    fn only_canonical_job_ids_are_parsed_strictly() {
        let id = JobId::new();
        let text = id.to_string();
        assert_eq!(JobId::parse_canonical(&text), Ok(id));
        for bad in [text.to_uppercase(), format!("{{{text}}}"), text.replace('-', ""), format!("urn:uuid:{text}")] {
            assert!(JobId::parse_canonical(&bad).is_err(), "{bad:?} was accepted");
            assert_eq!(bad.parse::<JobId>().ok(), Some(id), "the lenient parse still reads {bad:?}");
        }
    }

    #[test]
    fn a_message_without_an_id_gets_the_same_id_on_redelivery() {
        assert_eq!(JobId::for_message("vs_jobs", 9), JobId::for_message("vs_jobs", 9));
        assert_ne!(JobId::for_message("vs_jobs", 9), JobId::for_message("vs_jobs", 10));
    }
}
