//! Plugin ↔ daemon protocol: one JSON object per line over the unix socket, one request
//! and one response per connection.
//!
//! request:  `{"method":"allocate"|"release"|"check"|"ping"|"gc", "container_id":…, "network":…,
//!            "ifname":…, "netns":…, "options":{…}, "ipv4":true, "ipv6":false,
//!            "valid":[[container_id, ifname], …]}`
//! response: `{"ok":true, "lease":{…}, "lease6":{…}}` or `{"ok":false, "code":N, "error":"…"}`

use super::client::{ClientOptions, Lease};
use super::v6::Lease6;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Allocate,
    Release,
    Check,
    Ping,
    Gc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub method: Method,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub ifname: String,
    /// netns path as the runtime gave it (the daemon prepends its hostprefix)
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub options: ClientOptions,
    /// allocate/check a DHCPv4 lease (release and GC always cover both families)
    #[serde(default = "yes")]
    pub ipv4: bool,
    /// allocate/check a DHCPv6 lease
    #[serde(default)]
    pub ipv6: bool,
    /// GC only: the attachments (container id, ifname) of `network` to keep
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<Vec<(String, String)>>,
}

fn yes() -> bool {
    true
}

impl Request {
    /// A request with no attachment (ping).
    pub fn bare(method: Method) -> Request {
        Request {
            method,
            container_id: String::new(),
            network: String::new(),
            ifname: String::new(),
            netns: String::new(),
            options: ClientOptions::default(),
            ipv4: true,
            ipv6: false,
            valid: None,
        }
    }

    /// The lease key and (by default) the client id: `<containerID>/<network>/<ifname>`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.container_id, self.network, self.ifname)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease6: Option<Lease6>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Response {
    pub fn ok(lease: Option<Lease>, lease6: Option<Lease6>) -> Response {
        Response { ok: true, lease, lease6, code: 0, error: String::new() }
    }
    pub fn err(code: u32, error: String) -> Response {
        Response { ok: false, lease: None, lease6: None, code, error }
    }
}

/// Why a call failed: the daemon could not be reached, or it answered with an error.
#[derive(Debug)]
pub enum CallError {
    Unreachable(String),
    Daemon(u32, String),
}

/// How long the plugin waits for the daemon's answer (the daemon bounds its own work by
/// its `-timeout`; this only guards against a wedged daemon).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Send one request and read the answer.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, CallError> {
    let unreachable = |e: std::io::Error| {
        CallError::Unreachable(format!(
            "cannot reach the dhcp daemon at {} ({e}); is `dhcp daemon` running?",
            socket.display()
        ))
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut line = serde_json::to_vec(req).map_err(|e| CallError::Daemon(999, e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| CallError::Daemon(999, format!("no answer from the dhcp daemon at {}: {e}", socket.display())))?;
    if reply.is_empty() {
        return Err(CallError::Daemon(
            999,
            format!("the dhcp daemon at {} closed the connection without answering", socket.display()),
        ));
    }
    let resp: Response = serde_json::from_slice(reply.as_bytes())
        .map_err(|e| CallError::Daemon(999, format!("bad answer from the dhcp daemon: {e}")))?;
    if !resp.ok {
        return Err(CallError::Daemon(if resp.code == 0 { 999 } else { resp.code }, resp.error));
    }
    Ok(resp)
}

/// Daemon side: read one request line (bounded size) from a connection.
pub fn read_request(stream: &UnixStream) -> anyhow::Result<Request> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    use std::io::Read;
    BufReader::new(stream.take(1 << 20)).read_line(&mut line).context("reading request")?;
    serde_json::from_slice(line.as_bytes()).context("decoding request")
}

pub fn write_response(mut stream: &UnixStream, resp: &Response) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(resp)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(())
}
