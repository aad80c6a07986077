//! The values of `vigil-proxy init`'s flags: ports, port ranges and IP
//! networks (IPv4 and IPv6), parsed from comma-separated lists.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::InitError;

/// One port or an inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InitError::BadPort(s.to_string());
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let (first, last) = match s.split_once(['-', ':']) {
            Some((a, b)) => (port(a).ok_or_else(bad)?, port(b).ok_or_else(bad)?),
            None => {
                let p = port(s).ok_or_else(bad)?;
                (p, p)
            }
        };
        if first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    /// iptables `--dport` syntax: `80` or `9000:9100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// A comma-separated list of ports and ranges (empty allowed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<PortRange>);

impl FromStr for PortList {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s).map(PortList)
    }
}

/// An IP network, `addr/prefix`, IPv4 or IPv6 (a bare address is a /32 or
/// a /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpCidr {
    /// Network address (host bits as given).
    pub addr: IpAddr,
    /// Prefix length: 0-32 for IPv4, 0-128 for IPv6.
    pub prefix: u8,
}

impl FromStr for IpCidr {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InitError::BadCidr(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(IpCidr { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A comma-separated list of IP networks, IPv4 and IPv6 mixed (empty
/// allowed). Each family's rules get that family's networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpCidr>);

impl FromStr for CidrList {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s).map(CidrList)
    }
}

/// Parses each item of a comma-separated list (blank items skipped).
fn parse_list<T: FromStr<Err = InitError>>(s: &str) -> Result<Vec<T>, InitError> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::parse)
        .collect()
}
