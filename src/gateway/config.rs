//! The `[gateway]` config section and the gateway's listen address.

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Default of `gateway.address`: Kubo's `Addresses.Gateway`.
pub const DEFAULT_ADDRESS: &str = "/ip4/127.0.0.1/tcp/8080";
/// Default of `gateway.timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// The read-only HTTP gateway (Kubo's `Addresses.Gateway` and `Gateway.RetrievalTimeout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// A TCP multiaddr. Any interface may be used: the gateway only reads.
    #[serde(default = "default_address")]
    pub address: String,
    /// Seconds to wait for the blocks a response needs before its first byte (then 504), and
    /// for any one block while it streams (then the response is cut).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_address() -> String {
    DEFAULT_ADDRESS.into()
}
fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            address: default_address(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_secs == 0 {
            return Err("gateway: timeout_secs must be at least 1".into());
        }
        let m: Multiaddr = self.address.parse().map_err(|e| {
            format!(
                "gateway: address '{}' is not a multiaddr ({e})",
                self.address
            )
        })?;
        socket_addr(&m)?;
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// A `/ip4|ip6/A/tcp/P` multiaddr as a socket address.
pub fn socket_addr(m: &Multiaddr) -> Result<SocketAddr, String> {
    crate::node::rpc::socket_addr(m).map_err(|e| format!("gateway {e}"))
}

pub(crate) use crate::node::rpc::to_multiaddr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_timeouts_are_checked() {
        let c = GatewayConfig::default();
        c.validate().unwrap();
        let m: Multiaddr = c.address.parse().unwrap();
        assert_eq!(socket_addr(&m).unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(to_multiaddr(socket_addr(&m).unwrap()), m);
        // Read-only: any interface may be served.
        let public = GatewayConfig {
            address: "/ip4/0.0.0.0/tcp/8080".into(),
            ..c.clone()
        };
        public.validate().unwrap();
        for bad in [
            "/ip4/127.0.0.1/udp/8080",
            "/dns4/localhost/tcp/80",
            "nonsense",
        ] {
            let g = GatewayConfig {
                address: bad.into(),
                ..c.clone()
            };
            assert!(g.validate().is_err(), "{bad}");
        }
        let zero = GatewayConfig {
            timeout_secs: 0,
            ..c
        };
        assert!(zero.validate().unwrap_err().contains("timeout_secs"));
    }
}
