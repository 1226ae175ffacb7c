//! Endpoint addresses as the catalog and endpoint files write them: `ip:port`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One address Envoy can connect to. EDS needs IP addresses: Envoy resolves no names there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The IP address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
}

/// Why a string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointParseError {
    /// `10.0.0.1` without `:port`.
    #[error("{0:?} has no port")]
    NoPort(String),
    /// The host part is a name, not an IP address.
    #[error("{0:?} is not an IP address (use a `dns` source for names)")]
    NotAnIp(String),
    /// The port is not 1-65535.
    #[error("{0:?} has an invalid port (1-65535)")]
    BadPort(String),
}

impl Endpoint {
    /// Parses `ip:port` or `[ipv6]:port`.
    pub fn parse(s: &str) -> Result<Self, EndpointParseError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(EndpointParseError::BadPort(s.into()));
            }
            return Ok(Endpoint {
                ip: addr.ip(),
                port: addr.port(),
            });
        }
        if s.parse::<IpAddr>().is_ok()
            || s.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
        {
            return Err(EndpointParseError::NoPort(s.into()));
        }
        match s.rsplit_once(':') {
            None => Err(EndpointParseError::NoPort(s.into())),
            Some((host, port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.parse::<IpAddr>().is_err() {
                    Err(EndpointParseError::NotAnIp(s.into()))
                } else {
                    let _ = port;
                    Err(EndpointParseError::BadPort(s.into()))
                }
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.ip, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        assert_eq!(
            Endpoint::parse("10.0.1.5:80").unwrap().to_string(),
            "10.0.1.5:80"
        );
        assert_eq!(
            Endpoint::parse("[::1]:8080").unwrap().to_string(),
            "[::1]:8080"
        );
    }

    #[test]
    fn names_the_problem() {
        assert_eq!(
            Endpoint::parse("10.0.2.7").unwrap_err().to_string(),
            "\"10.0.2.7\" has no port"
        );
        assert!(matches!(
            Endpoint::parse("web:80"),
            Err(EndpointParseError::NotAnIp(_))
        ));
        assert!(matches!(
            Endpoint::parse("10.0.0.1:0"),
            Err(EndpointParseError::BadPort(_))
        ));
        assert!(matches!(
            Endpoint::parse("10.0.0.1:99999"),
            Err(EndpointParseError::BadPort(_))
        ));
    }
}
