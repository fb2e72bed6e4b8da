//! Reaching the cluster API's host: an IP literal as it is, a name through an in-process resolver
//! (hickory: `/etc/hosts`, then the name servers of `/etc/resolv.conf`).
//!
//! Why not libc's `getaddrinfo` (what `TcpStream::connect((host, port))` calls): the release
//! binary is linked statically against glibc, and a static glibc cannot load the NSS modules that
//! `getaddrinfo` dispatches to through `/etc/nsswitch.conf`; it would fail or, worse, load modules
//! of another glibc version. Resolving in Rust keeps the binary self-contained on any Pi image.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use super::error::ErrorKind;

/// Built on first use (it reads the system's resolver files once), then shared: hickory caches
/// answers for their TTL, so a pin every half second does not query DNS each time.
#[derive(Default)]
pub(crate) struct HostResolver {
    resolver: OnceCell<Result<TokioResolver, String>>,
}

impl HostResolver {
    /// The addresses to try for `host`, in the resolver's order.
    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ErrorKind> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let resolver = self
            .resolver
            .get_or_init(|| async {
                TokioResolver::builder_tokio()
                    .and_then(|b| b.build())
                    .map_err(|e| e.to_string())
            })
            .await
            .as_ref()
            .map_err(|reason| ErrorKind::Resolve {
                host: host.to_string(),
                reason: format!("cannot read the system's resolver configuration: {reason}"),
            })?;
        let lookup = resolver
            .lookup_ip(host)
            .await
            .map_err(|e| ErrorKind::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(ErrorKind::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        Ok(addrs)
    }

    /// A TCP connection to `host:port`: each resolved address in turn, the first that answers.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ErrorKind> {
        let mut last = None;
        for addr in self.lookup(host, port).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cluster: connect failed, trying the next address");
                    last = Some(e);
                }
            }
        }
        Err(ErrorKind::Connect {
            error: last.unwrap_or_else(|| std::io::Error::other("no address to connect to")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_need_no_resolver() {
        let r = HostResolver::default();
        assert_eq!(
            r.lookup("10.13.0.1", 9094).await.unwrap(),
            vec!["10.13.0.1:9094".parse().unwrap()]
        );
        assert_eq!(
            r.lookup("::1", 9094).await.unwrap(),
            vec!["[::1]:9094".parse().unwrap()]
        );
        assert!(r.resolver.get().is_none(), "no resolver was built");
    }

    // /etc/hosts is read by hickory itself: `localhost` resolves with no DNS server and no libc.
    #[tokio::test]
    async fn localhost_comes_from_the_hosts_file() {
        let r = HostResolver::default();
        let addrs = r.lookup("localhost", 9094).await.unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 9094),
            "{addrs:?}"
        );
    }
}
