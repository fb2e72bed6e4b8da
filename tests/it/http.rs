//! A small, blocking HTTP/1.1 client for tests: one request per connection over a `TcpStream`,
//! so a test can also send what no well-behaved client library would (a malformed body, a
//! request that stops half way). Decodes `Content-Length` and chunked bodies, keeps trailers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Every read and write gives up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// A parsed response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Names in lower case, in the order received.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Chunked responses' trailers, names in lower case.
    pub(crate) trailers: Vec<(String, String)>,
}

impl Response {
    /// The first header named `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn trailer(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.trailers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}), status {}: {}",
                self.status,
                self.text()
            )
        })
    }
}

/// `host:port` of a `/ip4/A/tcp/P` or `/ip6/A/tcp/P` multiaddr.
pub(crate) fn addr_of_multiaddr(m: &str) -> SocketAddr {
    let parts: Vec<&str> = m.trim().split('/').collect();
    match parts.as_slice() {
        ["", "ip4", ip, "tcp", port] => format!("{ip}:{port}").parse().expect("ip4 address"),
        ["", "ip6", ip, "tcp", port] => format!("[{ip}]:{port}").parse().expect("ip6 address"),
        _ => panic!("not a /ip4|ip6/../tcp/.. multiaddr: {m}"),
    }
}

/// Sends `method target` with `headers` and `body`, reads the whole response.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let sent = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let got = read_response(s, method == "HEAD").map_err(|e| format!("{method} {target}: {e}"));
    match (sent, got) {
        // A server may answer (413, 400) and close before reading all of a body.
        (Err(_), Ok(r)) if r.status >= 400 => Ok(r),
        (Err(e), _) => Err(format!("send {method} {target}: {e}")),
        (Ok(()), got) => got,
    }
}

pub(crate) fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, &[], b"").unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn post(addr: SocketAddr, target: &str) -> Response {
    request(addr, "POST", target, &[], b"").unwrap_or_else(|e| panic!("{e}"))
}

fn read_response(s: TcpStream, head_only: bool) -> Result<Response, String> {
    let mut r = BufReader::new(s);
    let status_line = line(&mut r)?;
    let mut it = status_line.splitn(3, ' ');
    let (Some(_), Some(code)) = (it.next(), it.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let headers = header_block(&mut r)?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    if head_only || status == 204 || status == 304 {
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = line(&mut r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                trailers = header_block(&mut r)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])
                .map_err(|e| format!("reading a chunk: {e}"))?;
            line(&mut r)?;
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)
            .map_err(|e| format!("reading {len} body bytes: {e}"))?;
    } else {
        r.read_to_end(&mut body)
            .map_err(|e| format!("reading the body: {e}"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
        trailers,
    })
}

fn line(r: &mut impl BufRead) -> Result<String, String> {
    let mut l = String::new();
    let n = r
        .read_line(&mut l)
        .map_err(|e| format!("reading the response: {e}"))?;
    if n == 0 {
        return Err("connection closed mid-response".into());
    }
    Ok(l.trim_end_matches(['\r', '\n']).to_string())
}

fn header_block(r: &mut impl BufRead) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    loop {
        let l = line(r)?;
        if l.is_empty() {
            return Ok(out);
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
}

#[test]
fn multiaddrs_map_to_socket_addresses() {
    assert_eq!(
        addr_of_multiaddr("/ip4/127.0.0.1/tcp/5001"),
        "127.0.0.1:5001".parse().unwrap()
    );
    assert_eq!(
        addr_of_multiaddr("/ip6/::1/tcp/8080"),
        "[::1]:8080".parse().unwrap()
    );
}
