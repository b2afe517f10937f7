//! A node's address as admins write it, `https://HOST:PORT`, parsed.

use std::fmt;

/// An endpoint that is not `https://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {0:?} is not valid: expected https://HOST:PORT")]
pub struct AddrError(pub String);

/// A parsed `https://host:port` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    pub fn parse(endpoint: &str) -> Result<Self, AddrError> {
        let bad = || AddrError(endpoint.to_owned());
        let uri: http::Uri = endpoint.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().ok_or_else(bad)?;
        if !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        Ok(Self { host, port })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_with_a_port() {
        assert_eq!(
            NodeAddr::parse("https://127.0.0.1:7443").unwrap(),
            NodeAddr {
                host: "127.0.0.1".into(),
                port: 7443
            }
        );
        assert_eq!(NodeAddr::parse("https://[::1]:7443").unwrap().host, "::1");
        for bad in ["http://a:1", "https://a", "a:1", "https://a:1/path", ""] {
            assert!(NodeAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
