//! Where a webhook may be sent (SSRF): `https` to public addresses only, or,
//! with `AGORA_WEBHOOKS_ALLOW_LOOPBACK=true`, also `http`/`https` to
//! loopback. A name is resolved and every address it has is checked, when
//! the endpoint is registered and again on every delivery's connection (the
//! delivery client's resolver is [`GuardedResolver`]), so a name that later
//! points inside (DNS rebinding) is refused then.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("must be an absolute URL")]
    NotAUrl,
    #[error("must use https (http only to a loopback address, when allowed)")]
    Scheme,
    #[error("must have a host name or address, and no user name or password")]
    Host,
    #[error("the host does not resolve: {0}")]
    Unresolvable(String),
    #[error("resolves to {0}, a private, link-local, loopback or otherwise internal address")]
    Internal(IpAddr),
}

/// What kind of address `ip` is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Loopback,
    /// Private, link-local, unspecified, multicast, reserved: never.
    Internal,
}

fn kind_v4(ip: Ipv4Addr) -> Kind {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Kind::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240
    {
        Kind::Internal
    } else {
        Kind::Public
    }
}

fn kind(ip: IpAddr) -> Kind {
    match ip {
        IpAddr::V4(ip) => kind_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return kind_v4(v4);
            }
            let segments = ip.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address inside it.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = ip.octets();
                return kind_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if ip.is_loopback() {
                Kind::Loopback
            } else if ip.is_unspecified()
                || ip.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link-local
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (segments[0] == 0x2001 && segments[1] == 0xdb8)
            // documentation
            {
                Kind::Internal
            } else {
                Kind::Public
            }
        }
    }
}

impl AddressPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AddressError> {
        match kind(ip) {
            Kind::Public => Ok(()),
            Kind::Loopback if self.allow_loopback => Ok(()),
            _ => Err(AddressError::Internal(ip)),
        }
    }

    /// Parses `url` and checks its scheme and host, then resolves the host
    /// and checks every address. `http` is allowed only when every address
    /// is loopback and loopback is allowed.
    pub async fn check(&self, url: &str) -> Result<Url, AddressError> {
        // The WHATWG parser would drop or escape these; the URL stored is the
        // one given, and Postgres text refuses NUL.
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(AddressError::NotAUrl);
        }
        let parsed = Url::parse(url).map_err(|_| AddressError::NotAUrl)?;
        let https = match parsed.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(AddressError::Scheme),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(AddressError::Host);
        }
        let host = parsed.host_str().ok_or(AddressError::Host)?.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses = resolve(&host, port).await?;
        for address in &addresses {
            self.check_ip(address.ip())?;
            if !https && kind(address.ip()) != Kind::Loopback {
                return Err(AddressError::Scheme);
            }
        }
        Ok(parsed)
    }
}

/// Every address of `host` (a name, or an address literal, IPv6 in brackets).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, AddressError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|err| AddressError::Unresolvable(err.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(AddressError::Unresolvable("no addresses".to_owned()));
    }
    Ok(addresses)
}

/// The delivery client's resolver: a name resolves only if every address it
/// has is allowed, so the address connected to is the address checked.
pub struct GuardedResolver(pub AddressPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = resolve(&host, 0).await?;
            for address in &addresses {
                policy.check_ip(address.ip())?;
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

impl GuardedResolver {
    pub fn shared(policy: AddressPolicy) -> Arc<Self> {
        Arc::new(Self(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for internal in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "::",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = internal.parse().expect("ip");
            assert_eq!(kind(ip), Kind::Internal, "{internal}");
        }
        for loopback in ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = loopback.parse().expect("ip");
            assert_eq!(kind(ip), Kind::Loopback, "{loopback}");
        }
        for public in ["93.184.215.14", "8.8.8.8", "2606:4700::1111"] {
            let ip: IpAddr = public.parse().expect("ip");
            assert_eq!(kind(ip), Kind::Public, "{public}");
        }
    }
}
