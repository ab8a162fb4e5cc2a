//! Server display names (seed 000 §3.3): 3 to 30 characters from the
//! Lithuanian alphabet (either case), digits, underscore and space.

use std::fmt;

use serde::Serialize;

const ALLOWED: &str = "aąbcčdeęėfghiįyjklmnopqrsštuųūvwxyzž0123456789_ ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ServerName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidName {
    #[error("name must be at least 3 characters")]
    TooShort,
    #[error("name must be at most 30 characters")]
    TooLong,
    #[error("name may contain only letters of the Lithuanian alphabet, digits, '_' and spaces; {0:?} is not allowed")]
    BadCharacter(char),
    #[error("name must not start or end with a space")]
    OuterSpace,
}

impl ServerName {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        // Counted in characters, not bytes: "ąčę" is three characters.
        let len = raw.chars().count();
        if len < 3 {
            return Err(InvalidName::TooShort);
        }
        if len > 30 {
            return Err(InvalidName::TooLong);
        }
        if let Some(bad) = raw.chars().find(|c| !is_allowed(*c)) {
            return Err(InvalidName::BadCharacter(bad));
        }
        // The seed allows spaces; leading or trailing ones only make two
        // names look alike in a list, so they are refused.
        if raw.starts_with(' ') || raw.ends_with(' ') {
            return Err(InvalidName::OuterSpace);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_allowed(c: char) -> bool {
    // `to_lowercase` of these letters is a single character, so comparing the
    // first lowered char is exact.
    c.to_lowercase().next().is_some_and(|l| ALLOWED.contains(l)) && c.to_lowercase().count() == 1
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lithuanian_letters_digits_underscore_and_space() {
        for ok in ["abc", "Mano serveris 1", "ŽĄSINAS_ūkis", "ąčę", "x".repeat(30).as_str()] {
            assert!(ServerName::parse(ok).is_ok(), "{ok:?} was refused");
        }
    }

    #[test]
    fn refuses_what_the_seed_refuses() {
        assert_eq!(ServerName::parse("ab"), Err(InvalidName::TooShort));
        assert_eq!(ServerName::parse(&"x".repeat(31)), Err(InvalidName::TooLong));
        assert_eq!(ServerName::parse("web-1"), Err(InvalidName::BadCharacter('-')));
        assert_eq!(ServerName::parse("ab/../c"), Err(InvalidName::BadCharacter('/')));
        assert_eq!(ServerName::parse("naïve"), Err(InvalidName::BadCharacter('ï')));
        assert_eq!(ServerName::parse(" abc"), Err(InvalidName::OuterSpace));
    }
}
