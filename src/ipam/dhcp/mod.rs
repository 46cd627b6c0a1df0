//! IPAM `dhcp`: the plugin side asks the lease daemon (`dhcp daemon`) over a unix socket;
//! the daemon runs the DHCP clients (DHCPv4, and DHCPv6 with `"ipv6": true`) inside the
//! container netns and keeps the leases alive. docs/guides/dhcp.md is the user's guide.
//!
//! Errors the plugin reports:
//! - daemon not reachable (no socket, nobody listening): code 11 "try again later", the
//!   message names the socket path; STATUS reports it as code 50.
//! - no DHCP server answer within the daemon's `-timeout`: code 11.
//! - anything else (interface missing or down, bad option config): code 999.

pub mod client;
pub mod daemon;
pub mod dns;
pub mod ns;
pub mod raw4;
pub mod rpc;
pub mod store;
pub mod v6;

pub use daemon::daemon_main;

use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Subcommand, Version};
use crate::cni::result::{Dns, IpConfig, Route};
use crate::cni::{code, CniError, CniResult, Ctx};
use crate::ipam::common::RawDns;
use anyhow::{anyhow, bail};
use client::{opt, ClientOptions, Lease};
use ipnet::IpNet;
use rpc::{CallError, Method, Request};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
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
    summary: "Gets an IPv4 address (DHCPv4) and, with `ipv6`, an IPv6 address (stateful DHCPv6) from the \
              DHCP servers on the container's network through the lease daemon (`dhcp daemon`), which keeps \
              the leases renewed; DNS from the leases goes into the result. Guide: docs/guides/dhcp.md.",
    section: "ipam",
    keys: &[
        k("daemonSocketPath", "string", "\"/run/cni/dhcp.sock\"", "the daemon's socket"),
        k("ipv4", "bool", "true", "lease an IPv4 address with DHCPv4"),
        k("ipv6", "bool", "false", "lease an IPv6 address with DHCPv6 (IA_NA), reported as /128"),
        k(
            "request",
            "list of {option, skipDefault}",
            "[]",
            "DHCPv4 options to ask for, in order, before routers, subnet-mask, DNS servers, domain and search \
             (those five unless an entry sets skipDefault, which may stand alone)",
        ),
        k(
            "provide",
            "list of {option, value, fromArg}",
            "[]",
            "DHCPv4 options to send: value, or the CNI_ARGS value named by fromArg, which wins when present",
        ),
        k("priority", "int", "0", "metric of every returned route (0 or negative: none)"),
        k("dns", "object", "{}", "nameservers/domain/search/options that win over the leases' DNS, field by field"),
    ],
    notes: &[
        "`dhcp daemon [-socketpath P] [-pidfile P] [-hostprefix P] [-broadcast] [-timeout 10s] [-resendmax 62s] \
         [-resendtimeout 208s] [-statedir /var/lib/cni/dhcp] [-linkcheck 10s]` runs the daemon; leases persist \
         in -statedir across restarts.",
        "A v6 lease is reported as /128 with no gateway or route: the on-link prefix and the default route come \
         from router advertisements. DEL releases even when the main plugin deleted the link first.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "lan",
  "type": "bridge",
  "bridge": "br0",
  "ipam": {"type": "dhcp", "ipv6": true, "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}
}"#,
    config: Some(config_fields::<IpamConf>),
};

#[derive(Debug, Default, Deserialize)]
struct NetConf {
    #[serde(default)]
    ipam: Option<IpamConf>,
}

#[derive(Debug, Deserialize)]
struct IpamConf {
    #[serde(rename = "daemonsocketpath", default)]
    daemon_socket_path: Option<String>,
    #[serde(default)]
    request: Vec<RequestOpt>,
    #[serde(default)]
    provide: Vec<ProvideOpt>,
    /// a Go int in the reference: see [`route_metric`]
    #[serde(default)]
    priority: i64,
    /// DHCPv4 on (the default) or off
    #[serde(default = "yes")]
    ipv4: bool,
    /// DHCPv6 (stateful, IA_NA) on or off (the default)
    #[serde(default)]
    ipv6: bool,
    /// DNS settings that win over what the leases say, field by field
    #[serde(default)]
    dns: RawDns,
}

impl Default for IpamConf {
    fn default() -> Self {
        IpamConf {
            daemon_socket_path: None,
            request: vec![],
            provide: vec![],
            priority: 0,
            ipv4: true,
            ipv6: false,
            dns: RawDns::default(),
        }
    }
}

fn yes() -> bool {
    true
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

/// Option names the reference understands (and, beyond it, the ISC names of the routes and DNS
/// options), or a decimal code as Go's `strconv.ParseUint(s, 10, 8)` reads it: digits only, no
/// sign or whitespace. A JSON number is taken as its decimal code (the reference refuses it).
pub fn parse_option(v: &serde_json::Value) -> anyhow::Result<u8> {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
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
        "domain-name-servers" => opt::DNS_SERVERS,
        "domain-name" => opt::DOMAIN_NAME,
        "domain-search" => opt::DOMAIN_SEARCH,
        n => Some(n)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|c| *c != 0 && *c != 255)
            .ok_or_else(|| anyhow!("unknown DHCP option {n:?}"))?,
    };
    Ok(code)
}

fn socket_path(c: &IpamConf) -> PathBuf {
    PathBuf::from(c.daemon_socket_path.as_deref().filter(|s| !s.is_empty()).unwrap_or(daemon::DEFAULT_SOCKET))
}

fn ipam_conf(ctx: &Ctx) -> anyhow::Result<IpamConf> {
    Ok(ctx.plugin_conf::<NetConf>()?.ipam.unwrap_or_default())
}

/// The options the daemon sends, built as the reference's `prepareOptions` builds them:
/// the request list (the entries' options in order, then routers and subnet mask, as v1.9.1
/// sends them, and the DNS options 6, 15, 119, unless an entry says `skipDefault`; an entry
/// without `option` only carries its `skipDefault`) and the provided options (`value`, then the
/// CNI_ARGS value named by `fromArg`, which wins when that arg is present; neither: nothing sent).
fn client_options(ctx: &Ctx, c: &IpamConf) -> anyhow::Result<ClientOptions> {
    let mut o = ClientOptions::default();
    let mut codes = Vec::new();
    for r in c.request.iter().filter(|r| !(r.option.is_null() || r.option.as_str() == Some(""))) {
        codes.push(parse_option(&r.option)?);
    }
    if !c.request.iter().any(|r| r.skip_default) {
        codes.extend([opt::ROUTERS, opt::SUBNET_MASK, opt::DNS_SERVERS, opt::DOMAIN_NAME, opt::DOMAIN_SEARCH]);
    }
    for code in codes {
        if !o.request.contains(&code) {
            o.request.push(code);
        }
    }
    for p in &c.provide {
        let code = parse_option(&p.option)?;
        let too_long = |from: &str| anyhow!("value of DHCP option {code} {from} is longer than 255 bytes");
        let mut value = None;
        if !p.value.is_empty() {
            if p.value.len() > 255 {
                return Err(too_long("(value)"));
            }
            value = Some(p.value.as_str());
        }
        if let Some(v) = Some(p.from_arg.as_str()).filter(|a| !a.is_empty()).and_then(|a| ctx.cni_arg(a)) {
            if v.len() > 255 {
                return Err(too_long(&format!("(CNI_ARGS {})", p.from_arg)));
            }
            value = Some(v);
        }
        let Some(value) = value else { continue };
        let value = value.as_bytes().to_vec();
        if code == opt::CLIENT_ID {
            o.client_id = value;
        } else {
            o.provide.retain(|(c, _)| *c != code);
            o.provide.push((code, value));
        }
    }
    Ok(o)
}

fn request(ctx: &Ctx, c: &IpamConf, method: Method, options: ClientOptions) -> Request {
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
        ipv4: c.ipv4,
        ipv6: c.ipv6,
        valid: None,
    }
}

fn call(socket: &Path, req: &Request) -> anyhow::Result<rpc::Response> {
    match rpc::call(socket, req, rpc::CALL_TIMEOUT) {
        Ok(r) => Ok(r),
        Err(CallError::Unreachable(m)) => Err(CniError::try_again(m).into()),
        Err(CallError::Daemon(c, m)) => Err(CniError::new(c, m).into()),
    }
}

/// The metric of the returned routes for `ipam.priority`, a Go int in the reference: 0 is none;
/// so is a negative value (the reference puts it in the result, `"priority": -1`, and the routes
/// get no metric, as netlink omits one that is not positive); beyond 32 bits is a config error
/// (code 7: a route metric has 32 bits; the reference puts the number in its result).
fn route_metric(priority: i64) -> Result<u32, CniError> {
    match priority {
        ..=0 => Ok(0),
        p => u32::try_from(p).map_err(|_| {
            CniError::config(format!("dhcp: priority {p} is out of range: a route metric is at most {}", u32::MAX))
        }),
    }
}

/// The IPAM result for a lease: address, gateway = first router, routes (option 121, or
/// option 33 plus a default route via the router); `priority` becomes every route's metric.
/// An on-link option-121 route (next hop 0.0.0.0) is `"gw": "0.0.0.0", "scope": 253`, as
/// v1.9.1 prints it; the main plugin installs it on-link (`plugins::steps::ipam::route_gateway`).
pub fn lease_to_result(lease: &Lease, priority: u32) -> anyhow::Result<CniResult> {
    let net = lease.net().ok_or_else(|| anyhow!("invalid lease prefix /{}", lease.prefix_len))?;
    let mut r = CniResult::default();
    r.ips.push(IpConfig { address: IpNet::V4(net), gateway: lease.router.map(IpAddr::V4), interface: None });
    for lr in &lease.routes {
        let mut route = Route::new(IpNet::V4(lr.dst), Some(IpAddr::V4(lr.gw.unwrap_or(Ipv4Addr::UNSPECIFIED))));
        if lr.gw.is_none() {
            route.scope = Some(253); // on-link (RT_SCOPE_LINK)
        }
        if priority > 0 {
            route.priority = Some(i64::from(priority));
        }
        r.routes.push(route);
    }
    r.dns = Dns {
        nameservers: lease.dns.iter().map(|a| a.to_string()).collect(),
        domain: lease.domain.clone(),
        search: lease.search.clone(),
        options: vec![],
    };
    Ok(r)
}

/// Add a DHCPv6 lease to a result: the address as /128 (DHCPv6 carries no prefix length;
/// the on-link prefix and the default route come from router advertisements), no gateway,
/// no route; its DNS servers after the v4 ones, its search domains merged.
pub fn add_lease6(r: &mut CniResult, lease: &v6::Lease6) {
    r.ips.push(IpConfig {
        address: IpNet::V6(ipnet::Ipv6Net::new(lease.address, 128).unwrap_or_default()),
        gateway: None,
        interface: None,
    });
    for s in lease.dns.iter().map(|a| a.to_string()) {
        if !r.dns.nameservers.contains(&s) {
            r.dns.nameservers.push(s);
        }
    }
    for s in &lease.search {
        if !r.dns.search.contains(s) {
            r.dns.search.push(s.clone());
        }
    }
}

/// DNS from the config wins over the lease's, field by field (as with the other IPAMs'
/// `dns`): nameservers, domain, search and options each come from the config when it sets them.
fn apply_config_dns(r: &mut CniResult, conf: &RawDns) {
    let c = conf.to_dns();
    if !c.nameservers.is_empty() {
        r.dns.nameservers = c.nameservers;
    }
    if c.domain.is_some() {
        r.dns.domain = c.domain;
    }
    if !c.search.is_empty() {
        r.dns.search = c.search;
    }
    if !c.options.is_empty() {
        r.dns.options = c.options;
    }
}

fn add(ctx: &Ctx) -> anyhow::Result<CniResult> {
    let c = ipam_conf(ctx)?;
    if !c.ipv4 && !c.ipv6 {
        return Err(CniError::config("dhcp: ipv4 and ipv6 are both false: nothing to lease").into());
    }
    ctx.require_netns()?;
    let metric = route_metric(c.priority)?;
    let options = client_options(ctx, &c)?;
    let resp = call(&socket_path(&c), &request(ctx, &c, Method::Allocate, options))?;
    let mut r = match (&resp.lease, c.ipv4) {
        (Some(l), true) => lease_to_result(l, metric)?,
        (None, true) => bail!("the dhcp daemon returned no DHCPv4 lease"),
        (_, false) => CniResult::default(),
    };
    if c.ipv6 {
        let l6 = resp.lease6.as_ref().ok_or_else(|| anyhow!("the dhcp daemon returned no DHCPv6 lease"))?;
        add_lease6(&mut r, l6);
    }
    apply_config_dns(&mut r, &c.dns);
    Ok(r)
}

fn del(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    call(&socket_path(&c), &request(ctx, &c, Method::Release, ClientOptions::default()))?;
    Ok(())
}

fn check(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    call(&socket_path(&c), &request(ctx, &c, Method::Check, ClientOptions::default()))?;
    Ok(())
}

/// GC: the daemon releases the leases (v4 and v6) of this network whose attachment is not in
/// `cni.dev/valid-attachments` (or the legacy `cni.dev/attachments`, as host-local reads them;
/// the reference has no GC). Without the key nothing is released; a list that does not decode
/// is code 6, an entry without its containerID or ifname code 7, and nothing is released.
fn gc(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    let valid = ctx.valid_attachments()?.map(|list| list.into_iter().map(|a| (a.container_id, a.ifname)).collect());
    let mut req = request(ctx, &c, Method::Gc, ClientOptions::default());
    req.valid = valid;
    call(&socket_path(&c), &req)?;
    Ok(())
}

fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ipam_conf(ctx)?;
    let path = socket_path(&c);
    match rpc::call(&path, &Request::bare(Method::Ping), std::time::Duration::from_secs(5)) {
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
        assert_eq!(parse_option(&json!("0121")).unwrap(), 121, "Go's ParseUint takes leading zeros");
        // beyond the reference's names: the ISC names of the routes and DNS options
        for (name, code) in [
            ("static-routes", 33),
            ("classless-static-routes", 121),
            ("classless-route", 121),
            ("domain-name-servers", 6),
            ("domain-name", 15),
            ("domain-search", 119),
        ] {
            assert_eq!(parse_option(&json!(name)).unwrap(), code, "{name}");
        }
        // as Go's strconv.ParseUint(s, 10, 8) and the name table: no whitespace, no sign
        for bad in [" routers", "routers ", " 121", "121\n", "+121", "-1", "", "1 2"] {
            assert!(parse_option(&json!(bad)).is_err(), "{bad:?}");
        }
        // pad and end are not options (the reference accepts them)
        for pad_or_end in [json!("0"), json!(0), json!("255"), json!(255)] {
            assert!(parse_option(&pad_or_end).is_err(), "{pad_or_end}");
        }
    }

    /// A lease of 198.19.0.20/24 from 198.19.0.1 with a default route, and nothing else.
    fn lease() -> Lease {
        Lease {
            address: "198.19.0.20".parse().unwrap(),
            prefix_len: 24,
            router: "198.19.0.1".parse().ok(),
            server_id: "198.19.0.1".parse().unwrap(),
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
            acquired_unix: 0,
            routes: vec![client::LeaseRoute { dst: "0.0.0.0/0".parse().unwrap(), gw: "198.19.0.1".parse().ok() }],
            dns: vec![],
            domain: None,
            search: vec![],
        }
    }

    #[test]
    fn result_from_lease() {
        let mut lease = lease();
        lease.routes.push(client::LeaseRoute { dst: "198.18.5.0/24".parse().unwrap(), gw: None });
        lease.dns = vec!["198.19.0.53".parse().unwrap()];
        lease.domain = Some("lab.example".into());
        lease.search = vec!["lab.example".into(), "example".into()];
        let r = lease_to_result(&lease, 50).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "198.19.0.20/24");
        assert_eq!(r.ips[0].gateway, "198.19.0.1".parse().ok());
        assert_eq!(r.routes[0].priority, Some(50));
        assert_eq!(r.routes[0].scope, None);
        assert_eq!(r.routes[1].scope, Some(253));
        assert_eq!(r.routes[1].gw, "0.0.0.0".parse().ok(), "on-link: v1.9.1's gw 0.0.0.0");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.to_json("1.0.0").unwrap()).unwrap()["routes"][1],
            serde_json::json!({"dst": "198.18.5.0/24", "gw": "0.0.0.0", "priority": 50, "scope": 253})
        );
        assert_eq!(r.dns.nameservers, vec!["198.19.0.53"]);
        assert_eq!(r.dns.domain.as_deref(), Some("lab.example"));

        // dual stack: the v6 address as /128, DNS merged; config DNS wins field by field
        let mut r = r;
        let l6 = v6::Lease6 {
            address: "fd00::20".parse().unwrap(),
            server_id: vec![0, 1],
            iaid: 1,
            t1_secs: 60,
            t2_secs: 96,
            preferred_secs: 120,
            valid_secs: 120,
            acquired_unix: 0,
            dns: vec!["fd00::53".parse().unwrap()],
            search: vec!["example".into(), "v6.example".into()],
            sol_max_rt: None,
        };
        add_lease6(&mut r, &l6);
        assert_eq!(r.ips[1].address.to_string(), "fd00::20/128");
        assert_eq!(r.ips[1].gateway, None);
        assert_eq!(r.dns.nameservers, vec!["198.19.0.53", "fd00::53"]);
        assert_eq!(r.dns.search, vec!["lab.example", "example", "v6.example"]);
        let conf: RawDns = serde_json::from_value(json!({"nameservers": ["198.18.0.9"]})).unwrap();
        apply_config_dns(&mut r, &conf);
        assert_eq!(r.dns.nameservers, vec!["198.18.0.9"]);
        assert_eq!(r.dns.search.len(), 3, "search not set in the config: the lease's stays");
    }

    fn options(ipam: serde_json::Value, args: &[(&str, &str)]) -> anyhow::Result<ClientOptions> {
        let mut ctx = Ctx::new(crate::cni::Command::Add);
        ctx.args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        client_options(&ctx, &serde_json::from_value(ipam).unwrap())
    }

    #[test]
    fn request_entry_with_skip_default_and_no_option() {
        // the reference: `if opt.SkipDefault { skip = true }; if opt.Option == "" { continue }`
        for entry in [json!({"skipdefault": true}), json!({"skipdefault": true, "option": ""})] {
            let o = options(json!({"request": [entry.clone(), {"option": "host-name"}]}), &[]).unwrap();
            assert_eq!(o.request, [opt::HOST_NAME], "{entry}: defaults skipped, host-name asked");
        }
        let o = options(json!({"request": [{"option": null}]}), &[]).unwrap();
        assert_eq!(o.request, [3, 1, 6, 15, 119], "an empty entry without skipDefault keeps the defaults");
        // v1.9.1's order: the entries first, then routers and subnet mask (then our DNS options)
        let o = options(json!({"request": [{"option": "121"}, {"option": "routers"}, {"option": 121}]}), &[]).unwrap();
        assert_eq!(o.request, [121, 3, 1, 6, 15, 119]);
        let e = options(json!({"request": [{"option": "nope", "skipdefault": true}]}), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("unknown DHCP option"), "{e:#}");
    }

    #[test]
    fn provided_value_is_overridden_by_a_present_cni_arg() {
        let ipam = json!({"provide": [{"option": "host-name", "value": "fixed", "fromarg": "K8S_POD_NAME"}]});
        let o = options(ipam.clone(), &[("K8S_POD_NAME", "pod-1")]).unwrap();
        assert_eq!(o.provide, [(opt::HOST_NAME, b"pod-1".to_vec())], "the arg, set last, wins");
        let o = options(ipam, &[("OTHER", "x")]).unwrap();
        assert_eq!(o.provide, [(opt::HOST_NAME, b"fixed".to_vec())], "absent arg: the value");
        let o = options(json!({"provide": [{"option": "host-name", "fromarg": "K8S_POD_NAME"}]}), &[]).unwrap();
        assert!(o.provide.is_empty(), "neither: nothing sent");
        let o = options(
            json!({"provide": [{"option": "dhcp-client-identifier", "value": "a", "fromarg": "CID"}]}),
            &[("CID", "b")],
        )
        .unwrap();
        assert_eq!(o.client_id, b"b");
        let long = "x".repeat(256);
        let e = options(json!({"provide": [{"option": 12, "value": long}]}), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("longer than 255 bytes"), "{e:#}");
        let e = options(json!({"provide": [{"option": 12, "fromarg": "A"}]}), &[("A", long.as_str())]).unwrap_err();
        assert!(format!("{e:#}").contains("CNI_ARGS A"), "{e:#}");
    }

    /// `priority` is a Go int in the reference: a negative one is accepted and gives the routes
    /// no metric (the reference's routes get none either: netlink omits a metric that is not
    /// positive); one beyond a 32-bit metric is a config error.
    #[test]
    fn priority_is_a_go_int() {
        let ctx_with = |priority: serde_json::Value| {
            let mut ctx = Ctx::new(crate::cni::Command::Add);
            ctx.conf = json!({"name": "n", "ipam": {"type": "dhcp", "priority": priority}});
            ctx
        };
        let lease = lease();
        let metric = |p: serde_json::Value| ipam_conf(&ctx_with(p)).map(|c| route_metric(c.priority));
        for (p, want) in
            [(json!(-1), 0), (json!(i64::MIN), 0), (json!(0), 0), (json!(7), 7), (json!(u32::MAX), u32::MAX)]
        {
            let m = metric(p.clone()).unwrap_or_else(|e| panic!("{p}: {e:#}")).unwrap();
            assert_eq!(m, want, "{p}");
            let r = lease_to_result(&lease, m).unwrap();
            assert_eq!(r.routes[0].priority, Some(i64::from(want)).filter(|w| *w > 0), "{p}");
        }
        let e = metric(json!(u64::from(u32::MAX) + 1)).unwrap().unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e:?}");
        assert!(e.msg.contains("4294967296"), "{}", e.msg);
        // not a Go int at all: a decoding error, as in the reference
        assert!(metric(json!(1.5)).is_err());
        assert!(metric(json!("1")).is_err());
    }

    #[test]
    fn config_shape_defaults_keep_v4_meaning() {
        let c: IpamConf = serde_json::from_value(json!({"type": "dhcp"})).unwrap();
        assert!(c.ipv4 && !c.ipv6);
        let c: IpamConf = serde_json::from_value(json!({"ipv6": true})).unwrap();
        assert!(c.ipv4 && c.ipv6);
        let c: IpamConf = serde_json::from_value(json!({"ipv4": false, "ipv6": true})).unwrap();
        assert!(!c.ipv4 && c.ipv6);
        assert!(IpamConf::default().ipv4);
    }
}
