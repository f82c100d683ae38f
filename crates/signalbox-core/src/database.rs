//! Where Signalbox keeps its data: the embedded stores in a data folder (the default), or a
//! PostgreSQL database named by a `postgres://` URL.
//!
//! The URL holds a password, so it never prints: [`PostgresUrl`]'s `Display` and `Debug` show
//! it with the password replaced by `***`, and only [`PostgresUrl::expose`] hands out the text a
//! database driver needs.

use std::fmt;
use std::path::PathBuf;

/// The backend chosen at start.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The embedded stores, as files in this folder.
    Embedded(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

impl DatabaseUrl {
    /// The backend from the `--database-url` flag when it is given, else the data folder.
    pub fn choose(data_dir: PathBuf, url: Option<&str>) -> Result<DatabaseUrl, DatabaseUrlError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => PostgresUrl::parse(url).map(DatabaseUrl::Postgres),
            None => Ok(DatabaseUrl::Embedded(data_dir)),
        }
    }

    /// A short name of the backend, for logs and status output.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::Embedded(_) => "embedded",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Embedded(dir) => write!(f, "{}", dir.display()),
            DatabaseUrl::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Embedded(dir) => f.debug_tuple("Embedded").field(dir).finish(),
            DatabaseUrl::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// Why a database URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid database URL: {reason} (expected postgres://user[:password]@host[:port]/database)"
)]
pub struct DatabaseUrlError {
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> DatabaseUrlError {
    DatabaseUrlError {
        reason: reason.into(),
    }
}

/// A checked `postgres://user[:password]@host[:port]/database[?options]` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    raw: String,
    user: String,
    host: String,
    port: u16,
    database: String,
    has_password: bool,
}

impl PostgresUrl {
    pub fn parse(raw: &str) -> Result<PostgresUrl, DatabaseUrlError> {
        let rest = raw
            .strip_prefix("postgres://")
            .or_else(|| raw.strip_prefix("postgresql://"))
            .ok_or_else(|| match raw.split_once("://") {
                Some((scheme, _)) => invalid(format!("the scheme {scheme:?} is not supported")),
                None => invalid("it does not start with postgres://"),
            })?;
        let (userinfo, rest) = rest
            .rsplit_once('@')
            .ok_or_else(|| invalid("it names no user (user@host)"))?;
        let (user, has_password) = match userinfo.split_once(':') {
            Some((user, _password)) => (user, true),
            None => (userinfo, false),
        };
        if user.is_empty() {
            return Err(invalid("the user is empty"));
        }
        let (authority, rest) = rest
            .split_once('/')
            .ok_or_else(|| invalid("it names no database (/database)"))?;
        let database = rest.split('?').next().unwrap_or_default();
        if database.is_empty() {
            return Err(invalid("the database name is empty"));
        }
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        Ok(PostgresUrl {
            raw: raw.to_owned(),
            user: user.to_owned(),
            host: host.to_owned(),
            port,
            database: database.to_owned(),
            has_password,
        })
    }

    /// The URL as given, password included: for the database driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The same server and user with another database: what tests and `migrate` use to make a
    /// database from a connection to the maintenance one.
    pub fn with_database(&self, database: &str) -> PostgresUrl {
        let (head, tail) = self
            .raw
            .rsplit_once('@')
            .expect("a parsed URL has a user part");
        let (authority, rest) = tail.split_once('/').expect("a parsed URL has a database");
        let options = rest.split_once('?').map(|(_, o)| o);
        let raw = match options {
            Some(options) => format!("{head}@{authority}/{database}?{options}"),
            None => format!("{head}@{authority}/{database}"),
        };
        PostgresUrl {
            raw,
            database: database.to_owned(),
            ..self.clone()
        }
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16), DatabaseUrlError> {
    // A bracketed IPv6 address: [::1]:5432.
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid("an IPv6 host has no closing ]"))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, parse_port(port)?)),
            None if after.is_empty() => Ok((host, 5432)),
            None => Err(invalid(format!("unexpected {after:?} after the host"))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, parse_port(port)?)),
        None => Ok((authority, 5432)),
    }
}

fn parse_port(port: &str) -> Result<u16, DatabaseUrlError> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("the port {port:?} is not a number from 1 to 65535")))
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.has_password { ":***" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgres://{}{password}@{host}:{}/{}",
            self.user, self.port, self.database
        )
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_is_parsed_and_never_prints_its_password() {
        let url = PostgresUrl::parse("postgres://sb:s3cret@db.internal:6543/signalbox").unwrap();
        assert_eq!(url.user(), "sb");
        assert_eq!(url.host(), "db.internal");
        assert_eq!(url.port(), 6543);
        assert_eq!(url.database(), "signalbox");
        assert_eq!(
            url.to_string(),
            "postgres://sb:***@db.internal:6543/signalbox"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!format!("{:?}", DatabaseUrl::Postgres(url.clone())).contains("s3cret"));
        assert_eq!(
            url.expose(),
            "postgres://sb:s3cret@db.internal:6543/signalbox"
        );
    }

    #[test]
    fn the_port_defaults_and_ipv6_hosts_and_options_are_understood() {
        let url = PostgresUrl::parse("postgresql://sb@localhost/db").unwrap();
        assert_eq!((url.host(), url.port()), ("localhost", 5432));
        let url = PostgresUrl::parse("postgres://sb@[::1]:5433/db?sslmode=disable").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.database()),
            ("::1", 5433, "db")
        );
        assert_eq!(url.to_string(), "postgres://sb@[::1]:5433/db");
        let other = url.with_database("other");
        assert_eq!(
            other.expose(),
            "postgres://sb@[::1]:5433/other?sslmode=disable"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (raw, says) in [
            ("mysql://u@h/db", "scheme \"mysql\""),
            ("localhost:5432/db", "does not start with postgres://"),
            ("postgres://localhost/db", "names no user"),
            ("postgres://u@h", "names no database"),
            ("postgres://u@h/", "database name is empty"),
            ("postgres://u@h:99999/db", "port \"99999\""),
            ("postgres://:pw@h/db", "user is empty"),
        ] {
            let err = PostgresUrl::parse(raw).unwrap_err().to_string();
            assert!(err.contains(says), "{raw}: {err}");
        }
    }

    #[test]
    fn the_data_folder_is_the_default() {
        let dir = PathBuf::from("data");
        assert_eq!(
            DatabaseUrl::choose(dir.clone(), None).unwrap(),
            DatabaseUrl::Embedded(dir.clone())
        );
        assert_eq!(
            DatabaseUrl::choose(dir.clone(), Some("  ")).unwrap(),
            DatabaseUrl::Embedded(dir.clone())
        );
        let chosen = DatabaseUrl::choose(dir, Some("postgres://u@h/db")).unwrap();
        assert_eq!(chosen.backend(), "postgres");
    }
}
