//! Published ports (seed 002 "Port Allocation"): a server's TCP ports
//! forwarded from host ports that the api allocates from its host's
//! `worker.port_range`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One published TCP port: `host` on the server's host forwards to
/// `container` in the server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    pub container: u16,
    pub host: u16,
}

/// The most ports one server may publish.
pub const MAX_PORTS: usize = 16;

/// Container ports a create may ask for: at most [`MAX_PORTS`], each 1 to
/// 65535, none twice.
pub fn check_ports(container: impl Iterator<Item = u16> + Clone) -> Result<(), crate::job::InvalidSpec> {
    if container.clone().count() > MAX_PORTS {
        return Err(crate::job::InvalidSpec::Ports(format!("a server may publish at most {MAX_PORTS} ports")));
    }
    if container.clone().any(|p| p == 0) || has_duplicates(container) {
        return Err(crate::job::InvalidSpec::Ports("container ports must be 1 to 65535 and distinct".into()));
    }
    Ok(())
}

pub(crate) fn has_duplicates(ports: impl Iterator<Item = u16>) -> bool {
    let mut seen = std::collections::HashSet::new();
    ports.into_iter().any(|p| !seen.insert(p))
}

/// A server's published ports as one database column:
/// `container:host` pairs, comma-separated (`"22:20000,80:20001"`; empty
/// for none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<PublishedPort>);

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}:{}", p.container, p.host)?;
        }
        Ok(())
    }
}

impl FromStr for PortList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(PortList::default());
        }
        s.split(',')
            .map(|pair| {
                let (container, host) = pair.split_once(':').ok_or("a pair is container:host")?;
                let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("a port is 1 to 65535");
                Ok(PublishedPort { container: port(container)?, host: port(host)? })
            })
            .collect::<Result<_, &str>>()
            .map(PortList)
            .map_err(str::to_owned)
    }
}

/// `worker.port_range`: the host ports a host offers, `"20000-29999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a port range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535")]
pub struct InvalidPortRange(String);

impl FromStr for PortRange {
    type Err = InvalidPortRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPortRange(s.to_owned());
        let (first, last) = s.trim().split_once('-').ok_or_else(bad)?;
        let (first, last): (u16, u16) =
            (first.trim().parse().map_err(|_| bad())?, last.trim().parse().map_err(|_| bad())?);
        // Below 1024 are the host's own services' ports.
        if first < 1024 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = InvalidPortRange;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + use<> {
        self.first..=self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_asks_for_few_distinct_ports() {
        assert!(check_ports(1..=MAX_PORTS as u16).is_ok());
        assert!(check_ports(1..=MAX_PORTS as u16 + 1).is_err());
        assert!(check_ports([22, 22].into_iter()).is_err());
        assert!(check_ports([0].into_iter()).is_err());
    }

    #[test]
    fn a_port_list_is_stored_as_text_and_read_back() {
        let list =
            PortList(vec![PublishedPort { container: 22, host: 20000 }, PublishedPort { container: 80, host: 20001 }]);
        assert_eq!(list.to_string(), "22:20000,80:20001");
        assert_eq!("22:20000,80:20001".parse::<PortList>(), Ok(list));
        assert_eq!("".parse::<PortList>(), Ok(PortList::default()));
        for bad in ["22", "22:0", "x:1", "22:20000,", "70000:1"] {
            assert!(bad.parse::<PortList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_range_is_above_the_system_ports_and_in_order() {
        assert_eq!("20000-29999".parse(), Ok(PortRange { first: 20000, last: 29999 }));
        assert_eq!("2000-2000".parse::<PortRange>().unwrap().iter().count(), 1);
        for bad in ["", "20000", "80-90", "3000-2000", "1-70000", "a-b", "2000-"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        let r: PortRange = serde_json::from_str(r#""20000-20010""#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#""20000-20010""#);
    }
}
