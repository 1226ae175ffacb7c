//! Endpoint addresses as the catalog and endpoint files write them: `ip:port`, or
//! `{ address: ip:port, zone: NAME }` for an endpoint whose availability zone is known.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Deserialize;

/// An availability zone name, e.g. `us-east-1a`: where an endpoint runs, or where an Envoy runs
/// (its `node.locality.zone`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zone(pub Arc<str>);

impl Zone {
    /// A zone from its name.
    pub fn new(name: &str) -> Self {
        Zone(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Zone {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One address Envoy can connect to. EDS needs IP addresses: Envoy resolves no names there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The IP address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// The availability zone it runs in, when its source says.
    pub zone: Option<Zone>,
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
    /// `zone: ""`.
    #[error("{0:?} has an empty zone (leave `zone` out when it is not known)")]
    EmptyZone(String),
}

/// One entry of `endpoints.static` or of an endpoint file, as written: `"ip:port"`, or
/// `{ address: "ip:port", zone: us-east-1a }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEntry {
    /// `"ip:port"`.
    Address(String),
    /// `{ address, zone }`.
    Zoned(ZonedEntry),
}

/// The object form of an [`EndpointEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonedEntry {
    /// `ip:port`.
    pub address: String,
    /// The availability zone.
    pub zone: Option<String>,
}

impl EndpointEntry {
    /// The endpoint this entry describes.
    pub fn endpoint(&self) -> Result<Endpoint, EndpointParseError> {
        match self {
            EndpointEntry::Address(a) => Endpoint::parse(a),
            EndpointEntry::Zoned(z) => {
                let ep = Endpoint::parse(&z.address)?;
                match z.zone.as_deref() {
                    None => Ok(ep),
                    Some("") => Err(EndpointParseError::EmptyZone(z.address.clone())),
                    Some(zone) => Ok(ep.in_zone(Some(Zone::new(zone)))),
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for EndpointEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // By hand rather than `untagged`, so an error in the object form names its field.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EndpointEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"ip:port\" or { address: \"ip:port\", zone: NAME }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(EndpointEntry::Address(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                ZonedEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(EndpointEntry::Zoned)
            }
        }
        d.deserialize_any(Visitor)
    }
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
                zone: None,
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

    /// The same address in `zone`.
    pub fn in_zone(self, zone: Option<Zone>) -> Self {
        Endpoint { zone, ..self }
    }
}

/// Sorts endpoints and keeps each address once: Envoy takes an address once per cluster, so an
/// address a source lists in two zones keeps the first (no zone sorts before any).
pub fn normalize(eps: &mut Vec<Endpoint>) {
    eps.sort();
    eps.dedup_by(|later, first| later.ip == first.ip && later.port == first.port);
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

    #[test]
    fn an_address_is_kept_once_whatever_its_zones() {
        let zoned =
            |s: &str, z: Option<&str>| Endpoint::parse(s).unwrap().in_zone(z.map(Zone::new));
        let mut eps = vec![
            zoned("10.0.0.2:80", Some("b")),
            zoned("10.0.0.1:80", Some("b")),
            zoned("10.0.0.1:80", Some("a")),
            zoned("10.0.0.1:80", None),
        ];
        normalize(&mut eps);
        assert_eq!(
            eps,
            [zoned("10.0.0.1:80", None), zoned("10.0.0.2:80", Some("b"))]
        );
    }

    #[test]
    fn an_entry_is_an_address_or_an_address_with_a_zone() {
        let entries: Vec<EndpointEntry> = serde_json::from_str(
            r#"["10.0.1.5:80", {"address": "10.0.2.7:80", "zone": "us-east-1b"}, {"address": "10.0.3.9:80"}]"#,
        )
        .unwrap();
        let eps: Vec<Endpoint> = entries.iter().map(|e| e.endpoint().unwrap()).collect();
        assert_eq!(eps[0].zone, None);
        assert_eq!(eps[1].zone, Some(Zone::new("us-east-1b")));
        assert_eq!(eps[1].to_string(), "10.0.2.7:80");
        assert_eq!(eps[2].zone, None);
        let empty: EndpointEntry =
            serde_json::from_str(r#"{"address": "10.0.2.7:80", "zone": ""}"#).unwrap();
        assert_eq!(
            empty.endpoint().unwrap_err().to_string(),
            "\"10.0.2.7:80\" has an empty zone (leave `zone` out when it is not known)"
        );
        let unknown =
            serde_json::from_str::<EndpointEntry>(r#"{"address": "10.0.2.7:80", "az": "x"}"#)
                .unwrap_err()
                .to_string();
        assert!(unknown.contains("unknown field `az`"), "{unknown}");
    }
}
