//! Domain names of a server (seed 003 §3.5, `Hosting_DomainNames`): a DNS
//! host name, kept in lower case so that one name has one spelling and
//! uniqueness holds whatever case it was given in.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidDomain {
    #[error("a domain name is at most 253 characters")]
    TooLong,
    #[error("a domain name has at least two labels separated by dots, like app.example.com")]
    OneLabel,
    #[error("label {0:?} must be 1 to 63 characters")]
    LabelLength(String),
    #[error("label {0:?} may contain only letters a-z, digits and '-', and must not start or end with '-'")]
    BadLabel(String),
    #[error("the last label {0:?} must not be all digits")]
    NumericTop(String),
}

impl DomainName {
    /// A host name (RFC 1123): labels of letters, digits and inner
    /// hyphens, at least two of them; a trailing dot is dropped and the
    /// name is lowered. No wildcard, no IP address, no Unicode (an IDN is
    /// given in its `xn--` form).
    pub fn parse(raw: &str) -> Result<Self, InvalidDomain> {
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if name.len() > 253 {
            return Err(InvalidDomain::TooLong);
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return Err(InvalidDomain::OneLabel);
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(InvalidDomain::LabelLength((*label).to_owned()));
            }
            let good = label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !good {
                return Err(InvalidDomain::BadLabel((*label).to_owned()));
            }
        }
        let top = labels[labels.len() - 1];
        if top.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidDomain::NumericTop(top.to_owned()));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_taken_in_lower_case_and_anything_else_is_refused() {
        assert_eq!(DomainName::parse("App.Example.COM.").unwrap().as_str(), "app.example.com");
        assert_eq!(DomainName::parse("xn--bcher-kva.example").unwrap().as_str(), "xn--bcher-kva.example");
        assert_eq!(DomainName::parse("localhost"), Err(InvalidDomain::OneLabel));
        assert_eq!(DomainName::parse("a..b"), Err(InvalidDomain::LabelLength(String::new())));
        assert_eq!(DomainName::parse("-a.example"), Err(InvalidDomain::BadLabel("-a".into())));
        assert_eq!(DomainName::parse("*.example.com"), Err(InvalidDomain::BadLabel("*".into())));
        assert_eq!(DomainName::parse("a_b.example"), Err(InvalidDomain::BadLabel("a_b".into())));
        assert_eq!(DomainName::parse("10.0.0.1"), Err(InvalidDomain::NumericTop("1".into())));
        assert_eq!(DomainName::parse("ą.example"), Err(InvalidDomain::BadLabel("ą".into())));
        assert_eq!(
            DomainName::parse(&format!("{}.example", "a".repeat(64))),
            Err(InvalidDomain::LabelLength("a".repeat(64)))
        );
        assert_eq!(DomainName::parse(&format!("{}.example", "a.".repeat(125))), Err(InvalidDomain::TooLong));
    }
}
