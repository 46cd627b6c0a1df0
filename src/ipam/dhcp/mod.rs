//! IPAM `dhcp`: the plugin side asks the lease daemon (`dhcp daemon`) over a unix socket;
//! the daemon runs the DHCP client inside the container netns and keeps the lease alive.
//!
//! Errors the plugin reports:
//! - daemon not reachable (no socket, nobody listening): code 11 "try again later", the
//!   message names the socket path; STATUS reports it as code 50.
//! - no DHCP server answer within the daemon's `-timeout`: code 11.
//! - anything else (interface missing or down, bad option config): code 999.

pub mod client;
pub mod daemon;
pub mod ns;
pub mod rpc;
pub mod store;

pub use daemon::daemon_main;

use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Subcommand, Version};
use crate::cni::result::{IpConfig, Route};
use crate::cni::{code, CniError, CniResult, Ctx};
use anyhow::{anyhow, bail};
use client::{opt, ClientOptions, Lease};
use ipnet::IpNet;
use rpc::{CallError, Method, Request};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const APPLET: Plugin = Plugin {
    name: "dhcp",
    about: "IPAM: leases from a DHCP server, kept alive by `dhcp daemon`",
    min_version: Version::new(0, 1, 0),
    // the reference parses CNI_ARGS loosely itself (only for `provide[].fromArg`)
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
    subcommands: &[Subcommand { word: "daemon", main: daemon_main }],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Ipam,
    summary: "Gets an IPv4 address from a DHCP server on the container's network through the \
              lease daemon (`dhcp daemon`), which keeps the leases renewed.",
    section: "ipam",
    keys: &[
        k("daemonSocketPath", "string", "\"/run/cni/dhcp.sock\"", "the daemon's socket"),
        k(
            "request",
            "list of {option, skipDefault}",
            "[]",
            "options to ask for (routers and subnet-mask unless skipDefault)",
        ),
        k("provide", "list of {option, value, fromArg}", "[]", "options to send; fromArg takes a CNI_ARGS value"),
        k("priority", "int", "0", "metric of every returned route"),
    ],
    notes: &["`dhcp daemon [-socketpath P] [-pidfile P] [-hostprefix P] [-broadcast] [-timeout 10s] [-resendmax 62s] \
         [-resendtimeout 208s] [-statedir /var/lib/cni/dhcp] [-linkcheck 10s]` runs the daemon; leases persist \
         in -statedir across restarts."],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "lan",
  "type": "macvlan",
  "master": "eth0",
  "ipam": {"type": "dhcp", "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}
}"#,
    config: Some(config_fields::<IpamConf>),
};

#[derive(Debug, Default, Deserialize)]
struct NetConf {
    #[serde(default)]
    ipam: Option<IpamConf>,
}

#[derive(Debug, Default, Deserialize)]
struct IpamConf {
    #[serde(rename = "daemonsocketpath", default)]
    daemon_socket_path: Option<String>,
    #[serde(default)]
    request: Vec<RequestOpt>,
    #[serde(default)]
    provide: Vec<ProvideOpt>,
    #[serde(default)]
    priority: u32,
}

#[derive(Debug, Deserialize)]
struct RequestOpt {
    #[serde(default)]
    option: serde_json::Value,
    #[serde(rename = "skipdefault", default)]
    skip_default: bool,
}

#[derive(Debug, Deserialize)]
struct ProvideOpt {
    #[serde(default)]
    option: serde_json::Value,
    #[serde(default)]
    value: String,
    #[serde(rename = "fromarg", default)]
    from_arg: String,
}

/// Option names the reference understands, plus decimal codes.
pub fn parse_option(v: &serde_json::Value) -> anyhow::Result<u8> {
    let s = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => bail!("invalid DHCP option {other}"),
    };
    let code = match s.as_str() {
        "dhcp-client-identifier" => opt::CLIENT_ID,
        "subnet-mask" => opt::SUBNET_MASK,
        "routers" => opt::ROUTERS,
        "host-name" => opt::HOST_NAME,
        "user-class" => opt::USER_CLASS,
        "vendor-class-identifier" => opt::VENDOR_CLASS,
        "classless-static-routes" | "classless-route" => opt::CLASSLESS_ROUTES,
        "static-routes" => opt::STATIC_ROUTES,
        n => {
            n.parse::<u8>().ok().filter(|c| *c != 0 && *c != 255).ok_or_else(|| anyhow!("unknown DHCP option {n:?}"))?
        }
    };
    Ok(code)
}

fn socket_path(c: &IpamConf) -> PathBuf {
    PathBuf::from(c.daemon_socket_path.as_deref().filter(|s| !s.is_empty()).unwrap_or(daemon::DEFAULT_SOCKET))
}

fn ipam_conf(ctx: &Ctx) -> anyhow::Result<IpamConf> {
    Ok(ctx.plugin_conf::<NetConf>()?.ipam.unwrap_or_default())
}

/// The options the daemon sends: request list (routers + subnet mask unless an entry says
/// `skipDefault`) and the provided options (value verbatim, or the CNI_ARGS value named by
/// `fromArg`; an absent arg is skipped).
fn client_options(ctx: &Ctx, c: &IpamConf) -> anyhow::Result<ClientOptions> {
    let mut o = ClientOptions::default();
    if !c.request.iter().any(|r| r.skip_default) {
        o.request = vec![opt::ROUTERS, opt::SUBNET_MASK];
    }
    for r in &c.request {
        let code = parse_option(&r.option)?;
        if !o.request.contains(&code) {
            o.request.push(code);
        }
    }
    for p in &c.provide {
        let code = parse_option(&p.option)?;
        let value = if !p.value.is_empty() {
            p.value.clone()
        } else if !p.from_arg.is_empty() {
            match ctx.cni_arg(&p.from_arg) {
                Some(v) => v.to_string(),
                None => continue,
            }
        } else {
            continue;
        };
        if value.len() > 255 {
            bail!("value of DHCP option {code} is longer than 255 bytes");
        }
        if code == opt::CLIENT_ID {
            o.client_id = value.into_bytes();
        } else {
            o.provide.retain(|(c, _)| *c != code);
            o.provide.push((code, value.into_bytes()));
        }
    }
    Ok(o)
}

fn request(ctx: &Ctx, method: Method, options: ClientOptions) -> Request {
    let netns = ctx.netns.clone().unwrap_or_default();
    let netns = if netns.is_empty() || Path::new(&netns).is_absolute() {
        netns
    } else {
        std::env::current_dir().map(|d| d.join(&netns).to_string_lossy().into_owned()).unwrap_or(netns)
    };
    Request {
        method,
        container_id: ctx.container_id.clone(),
        network: ctx.name.clone(),
        ifname: ctx.ifname.clone(),
        netns,
        options,
        valid: None,
    }
}

fn call(socket: &Path, req: &Request) -> anyhow::Result<Option<Lease>> {
    match rpc::call(socket, req, rpc::CALL_TIMEOUT) {
        Ok(r) => Ok(r.lease),
        Err(CallError::Unreachable(m)) => Err(CniError::try_again(m).into()),
        Err(CallError::Daemon(c, m)) => Err(CniError::new(c, m).into()),
    }
}

/// The IPAM result for a lease: address, gateway = first router, routes (option 121, or
/// option 33 plus a default route via the router); `priority` becomes every route's metric.
pub fn lease_to_result(lease: &Lease, priority: u32) -> anyhow::Result<CniResult> {
    let net = lease.net().ok_or_else(|| anyhow!("invalid lease prefix /{}", lease.prefix_len))?;
    let mut r = CniResult::default();
    r.ips.push(IpConfig { address: IpNet::V4(net), gateway: lease.router.map(IpAddr::V4), interface: None });
    for lr in &lease.routes {
        let mut route = Route::new(IpNet::V4(lr.dst), lr.gw.map(IpAddr::V4));
        if lr.gw.is_none() {
            route.scope = Some(253); // on-link (RT_SCOPE_LINK)
        }
        if priority > 0 {
            route.priority = Some(priority);
        }
        r.routes.push(route);
    }
    Ok(r)
}

fn add(ctx: &Ctx) -> anyhow::Result<CniResult> {
    let c = ipam_conf(ctx)?;
    ctx.require_netns()?;
    let options = client_options(ctx, &c)?;
    let lease = call(&socket_path(&c), &request(ctx, Method::Allocate, options))?
        .ok_or_else(|| anyhow!("the dhcp daemon returned no lease"))?;
    lease_to_result(&lease, c.priority)
}

fn del(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    call(&socket_path(&c), &request(ctx, Method::Release, ClientOptions::default()))?;
    Ok(())
}

fn check(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    call(&socket_path(&c), &request(ctx, Method::Check, ClientOptions::default()))?;
    Ok(())
}

/// GC: the daemon releases the leases of this network whose attachment is not in
/// `cni.dev/valid-attachments` (the reference has no GC). Without the key nothing is released.
fn gc(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    let valid = match ctx.get("cni.dev/valid-attachments") {
        None => None,
        Some(v) => Some(
            v.as_array()
                .ok_or_else(|| CniError::new(code::DECODE, "cni.dev/valid-attachments must be a list"))?
                .iter()
                .map(|a| {
                    let field = |k: &str| a.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
                    (field("containerid"), field("ifname"))
                })
                .collect(),
        ),
    };
    let mut req = request(ctx, Method::Gc, ClientOptions::default());
    req.valid = valid;
    call(&socket_path(&c), &req)?;
    Ok(())
}

fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    let path = socket_path(&c);
    let ping = Request {
        method: Method::Ping,
        container_id: String::new(),
        network: String::new(),
        ifname: String::new(),
        netns: String::new(),
        options: ClientOptions::default(),
        valid: None,
    };
    match rpc::call(&path, &ping, std::time::Duration::from_secs(5)) {
        Ok(_) => Ok(()),
        Err(CallError::Unreachable(m) | CallError::Daemon(_, m)) => Err(CniError::new(code::NOT_AVAILABLE, m).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn option_names_and_codes() {
        assert_eq!(parse_option(&json!("routers")).unwrap(), 3);
        assert_eq!(parse_option(&json!("host-name")).unwrap(), 12);
        assert_eq!(parse_option(&json!("121")).unwrap(), 121);
        assert_eq!(parse_option(&json!(60)).unwrap(), 60);
        assert!(parse_option(&json!("nope")).is_err());
        assert!(parse_option(&json!("256")).is_err());
        assert!(parse_option(&json!("0")).is_err());
    }

    #[test]
    fn result_from_lease() {
        let lease = Lease {
            address: "198.19.0.20".parse().unwrap(),
            prefix_len: 24,
            router: "198.19.0.1".parse().ok(),
            server_id: "198.19.0.1".parse().unwrap(),
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
            acquired_unix: 0,
            routes: vec![
                client::LeaseRoute { dst: "0.0.0.0/0".parse().unwrap(), gw: "198.19.0.1".parse().ok() },
                client::LeaseRoute { dst: "198.18.5.0/24".parse().unwrap(), gw: None },
            ],
        };
        let r = lease_to_result(&lease, 50).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "198.19.0.20/24");
        assert_eq!(r.ips[0].gateway, "198.19.0.1".parse().ok());
        assert_eq!(r.routes[0].priority, Some(50));
        assert_eq!(r.routes[0].scope, None);
        assert_eq!(r.routes[1].scope, Some(253));
        assert_eq!(r.routes[1].gw, None);
    }
}
