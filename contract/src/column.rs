//! The contract's ids and states as database columns (features `sqlx` and
//! `rusqlite`, which only the api enables): stored as their text, and read
//! back through their parser, so a value that is not one of theirs is an
//! error naming it, never a default.

use std::fmt::Display;
use std::str::FromStr;

use crate::{Action, JobId, JobStatus, ServerStatus};

/// A value read from the database that is not a valid `what`.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} in the database is not a valid {what}: {reason}")]
pub struct BadColumn {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

fn parse<T>(what: &'static str, text: &str) -> Result<T, BadColumn>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse().map_err(|e: T::Err| BadColumn { what, value: text.to_owned(), reason: e.to_string() })
}

macro_rules! text_column {
    ($ty:ty, $what:literal, |$v:ident| $text:expr) => {
        #[cfg(feature = "sqlx")]
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                let $v = self;
                <String as sqlx::Encode<'q, DB>>::encode(String::from($text), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(parse($what, text)?)
            }
        }

        #[cfg(feature = "rusqlite")]
        impl rusqlite::types::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                let $v = self;
                Ok(rusqlite::types::ToSqlOutput::from(String::from($text)))
            }
        }

        #[cfg(feature = "rusqlite")]
        impl rusqlite::types::FromSql for $ty {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                parse($what, value.as_str()?).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

text_column!(ServerStatus, "server status", |v| v.as_str());
text_column!(JobStatus, "job status", |v| v.as_str());
text_column!(Action, "action", |v| v.as_str());
text_column!(JobId, "job id", |v| v.to_string());
text_column!(crate::ports::PortList, "port list", |v| v.to_string());

// A server id is stored as the integer it is, and read back through
// `ServerId::new`: zero or a negative number is an error naming it.
#[cfg(feature = "sqlx")]
impl<DB: sqlx::Database> sqlx::Type<DB> for crate::ServerId
where
    i64: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as sqlx::Type<DB>>::compatible(ty)
    }
}

#[cfg(feature = "sqlx")]
impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for crate::ServerId
where
    i64: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <i64 as sqlx::Encode<'q, DB>>::encode(self.as_i64(), buf)
    }
}

#[cfg(feature = "sqlx")]
impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for crate::ServerId
where
    i64: sqlx::Decode<'r, DB>,
{
    fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <i64 as sqlx::Decode<'r, DB>>::decode(value)?;
        Ok(parse("server id", &raw.to_string())?)
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::ToSql for crate::ServerId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.as_i64()))
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::FromSql for crate::ServerId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let raw = value.as_i64()?;
        crate::ServerId::new(raw).map_err(|e| {
            rusqlite::types::FromSqlError::Other(Box::new(BadColumn {
                what: "server id",
                value: raw.to_string(),
                reason: e.to_string(),
            }))
        })
    }
}
