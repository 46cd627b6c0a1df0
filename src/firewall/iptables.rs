//! The iptables backend: the reference's chain layout, planned as `iptables-restore --noflush`
//! input from a read of the table (the read is what makes the change idempotent and exact).
//! Where iptables-nft holds the table, the read and the change go over netlink
//! ([`super::iptables_nft`]); else ONE `iptables-restore --noflush -w` (or `ip6tables-restore`)
//! exec per change and family, after one `*-save` read.
//!
//! ipMasq layout (nat table), as the reference writes it:
//! ```text
//! :CNI-<24 hex of sha512(network + containerID)>
//! -A CNI-… -d <subnet> -j ACCEPT -m comment --comment "name: \"<net>\" id: \"<cid>\""
//! -A CNI-… ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment "…"     (ff00::/8 for IPv6)
//! -A POSTROUTING -s <ip> -j CNI-… -m comment --comment "…"
//! ```
//! The reference's chains carry no network marker of their own; GC recognises ours (and the
//! reference's) by the comment, and double-checks that the chain name is the hash of the
//! network and container id found in it.

use super::ipmasq::MasqBackend;
use super::{Attachment, BackendKind};
use crate::cni::CniError;
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Go's `%q` (`strconv.Quote`): the one copy lives with the CNI protocol's Go-compatible texts.
pub use crate::cni::result::go_quote;
pub use crate::names::{ipmasq_chain as chain_name, ipmasq_comment as comment};

/// An iptables chain name from a config (`iptablesAdminChainName`, `externalSetMarkChain`):
/// what iptables takes (`iptables -N`: 1-28 bytes, UTF-8 included, no whitespace, not starting
/// with `-` or `!`, not a built-in target), less a `"`, a `\` or a control character, which
/// iptables takes but `iptables-save` prints unquoted after `-j`, so the rule could not be read
/// back exactly (and a newline would start a restore line of its own), and less any Unicode
/// whitespace (`iptables` refuses ASCII whitespace only; saved rules are split at any). Code 7,
/// before any change.
pub fn check_chain_name(key: &str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 28 {
        Some("iptables takes at most 28 bytes")
    } else if name.starts_with(['-', '!']) {
        Some("it starts with - or !")
    } else if name.chars().any(char::is_whitespace) {
        Some("it holds whitespace")
    } else if name.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        Some("it holds a quote, a backslash or a control character")
    } else if matches!(name, "ACCEPT" | "DROP" | "RETURN" | "QUEUE") {
        Some("it is a built-in target")
    } else {
        None
    };
    match why {
        Some(why) => {
            Err(CniError::config(format!("invalid {key} {}: not an iptables chain name ({why})", go_quote(name)))
                .into())
        }
        None => Ok(()),
    }
}

/// Config text written into restore input as arguments (portmap's iptables-syntax conditions):
/// no control character, since a newline would start a restore line of its own, and no empty
/// argument, which iptables refuses ("Bad argument `'"; the reference fails there, after making
/// its chains). Code 7.
pub fn check_restore_args(key: &str, args: &[String]) -> Result<()> {
    if let Some(a) = args.iter().find(|a| a.chars().any(char::is_control)) {
        return Err(CniError::config(format!("invalid {key}: {a:?} holds a control character")).into());
    }
    if args.iter().any(String::is_empty) {
        return Err(CniError::config(format!("invalid {key}: an empty argument (iptables refuses it)")).into());
    }
    Ok(())
}

/// Quotes one argument for iptables-restore input.
pub fn restore_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The nat table as read from `iptables-save -t nat`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NatState {
    pub chains: Vec<String>,
    /// (chain, full `-A …` line)
    pub rules: Vec<(String, String)>,
    /// Read from nf_tables rather than from `*-save` ([`super::iptables_nft`]): the rule handles.
    pub native: Option<super::iptables_nft::Handles>,
}

/// Parses `iptables-save` output, keeping only the `*nat` table.
pub fn parse_save(text: &str) -> NatState {
    parse_save_table(text, "nat")
}

/// Parses `iptables-save` output, keeping only `table`.
pub fn parse_save_table(text: &str, table: &str) -> NatState {
    let mut st = NatState::default();
    let mut in_nat = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(t) = line.strip_prefix('*') {
            in_nat = t == table;
            continue;
        }
        if !in_nat {
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            if let Some(name) = rest.split_whitespace().next() {
                st.chains.push(name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            if let Some(chain) = rest.split_whitespace().next() {
                st.rules.push((chain.to_string(), line.to_string()));
            }
        }
    }
    st
}

/// Splits an iptables-save rule line into arguments (double quotes, backslash escapes).
pub fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut have = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    have = true;
                }
            }
            '"' => {
                in_q = !in_q;
                have = true;
            }
            c if c.is_whitespace() && !in_q => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// A rule's arguments (after `-A <chain>`) in the form that two spellings of one rule share: the
/// restore input a plugin plans and the line `iptables-save` (or the native read) prints for it.
/// The rule is cut into option groups (`[!] -opt value…`), long option names are folded to the
/// short ones (`--destination-ports` is `--dports`), a protocol's match module implied by `-p`
/// (`-m tcp`) is dropped, addresses carry their prefix length (`127.0.0.1` is `127.0.0.1/32`,
/// `198.18.0.5/24` is `198.18.0.0/24`), protocols are numbers; the groups are sorted, since
/// `iptables-save` prints the addresses and the protocol first. Two rules are the same rule when
/// these are equal (what `iptables -C` answers, for the options the plugins write).
pub fn canonical_rule(args: &[String]) -> Vec<String> {
    let long = |o: &str| -> String {
        match o {
            "--source" | "--src" => "-s",
            "--destination" | "--dst" => "-d",
            "--protocol" => "-p",
            "--in-interface" => "-i",
            "--out-interface" => "-o",
            "--jump" => "-j",
            "--goto" => "-g",
            "--match" => "-m",
            "--destination-ports" => "--dports",
            "--source-ports" => "--sports",
            "--destination-port" => "--dport",
            "--source-port" => "--sport",
            o => o,
        }
        .to_string()
    };
    let mut groups: Vec<(bool, String, Vec<String>)> = Vec::new();
    let mut not = false;
    for a in args {
        if a == "!" {
            not = true;
        } else if a.len() > 1 && a.starts_with('-') {
            groups.push((std::mem::take(&mut not), long(a), Vec::new()));
        } else if let Some(g) = groups.last_mut() {
            g.2.push(a.clone());
        } else {
            groups.push((std::mem::take(&mut not), String::new(), vec![a.clone()]));
        }
    }
    let proto = |p: &str| -> String {
        let p = p.to_ascii_lowercase();
        super::ip_proto_number(&p).map_or(p, |n| n.to_string())
    };
    let net = |s: &str| -> String {
        match (s.parse::<IpNet>(), s.parse::<std::net::IpAddr>()) {
            (Ok(n), _) => n.trunc().to_string(),
            (_, Ok(a)) => IpNet::from(a).to_string(),
            _ => s.to_string(),
        }
    };
    let p = groups.iter().find(|g| g.1 == "-p").and_then(|g| g.2.first()).map(|v| proto(v));
    let any =
        |v: &[String]| v.len() == 1 && v.first().is_some_and(|a| a.parse::<IpNet>().is_ok_and(|n| n.prefix_len() == 0));
    let mut out: Vec<String> = groups
        .into_iter()
        .filter(|(_, o, v)| !(o == "-m" && v.len() == 1 && v.first().is_some_and(|m| p.as_deref() == Some(&*proto(m)))))
        // `-s 0.0.0.0/0` (masqAll's hairpin rule) matches everything: iptables keeps no match
        .filter(|(not, o, v)| !(!not && (o == "-s" || o == "-d") && any(v)))
        .map(|(not, o, v)| {
            let v: Vec<String> = match o.as_str() {
                "-s" | "-d" => v.iter().map(|x| net(x)).collect(),
                "-p" => v.iter().map(|x| proto(x)).collect(),
                _ => v,
            };
            format!("{}{o}\0{}", if not { "!" } else { "" }, v.join("\0"))
        })
        .collect();
    out.sort();
    out
}

/// Does `chain` of `state` hold the rule `args` (arguments after `-A <chain>`), the whole rule
/// and nothing else ([`canonical_rule`])?
pub fn has_exact_rule(state: &NatState, chain: &str, args: &[String]) -> bool {
    let want = canonical_rule(args);
    state.rules.iter().any(|(c, l)| c == chain && canonical_rule(split_args(l).get(2..).unwrap_or_default()) == want)
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(|s| s.as_str())
}

/// Inverse of [`go_quote`] for a whole `"…"` token; None if not a quoted string.
fn go_unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
        let h: String = chars.by_ref().take(n).collect();
        (h.len() == n).then(|| u32::from_str_radix(&h, 16).ok()).flatten()
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            'x' => out.push(char::from_u32(hex(&mut chars, 2)?)?),
            'u' => out.push(char::from_u32(hex(&mut chars, 4)?)?),
            'U' => out.push(char::from_u32(hex(&mut chars, 8)?)?),
            o => out.push(o),
        }
    }
    Some(out)
}

/// Finds the container id in a comment of `network`: `name: "<net>" id: "<cid>"`.
pub fn comment_container_id(network: &str, comment: &str) -> Option<String> {
    let rest = comment.strip_prefix(&format!("name: {} id: ", go_quote(network)))?;
    go_unquote(rest)
}

/// Restore input that sets up masquerading for `ips` (all of one family) in `state` (which must
/// hold the rules of POSTROUTING and of the container's chain); None when everything is there.
/// As the reference's `SetupIPMasq`: the chain is created when missing, and each rule (the
/// subnet's ACCEPT, the MASQUERADE, the address's POSTROUTING jump) is appended unless it is
/// there, so another interface of the container on this network (the chain is shared: its name
/// and comment hold no interface) keeps its rules.
pub fn masq_setup_input(state: &NatState, network: &str, container_id: &str, ips: &[IpNet]) -> Option<String> {
    let first = ips.first()?;
    let v6 = first.addr().is_ipv6();
    let chain = chain_name(network, container_id);
    let c = restore_quote(&comment(network, container_id));
    let multicast = if v6 { "ff00::/8" } else { "224.0.0.0/4" };
    let mut planned: Vec<String> = Vec::new();
    for ip in ips {
        let accept = format!("-d {} -j ACCEPT -m comment --comment {c}", ip.trunc());
        let masq = format!("! -d {multicast} -j MASQUERADE -m comment --comment {c}");
        for r in [accept, masq] {
            if !planned.contains(&r) && !has_exact_rule(state, &chain, &split_args(&r)) {
                planned.push(r);
            }
        }
    }
    let mut lines: Vec<String> = Vec::new();
    if !state.chains.contains(&chain) {
        lines.push(format!(":{chain} - [0:0]"));
    }
    lines.extend(planned.iter().map(|r| format!("-A {chain} {r}")));
    for ip in ips {
        let host = ip.addr();
        let plen = if v6 { 128 } else { 32 };
        let present = state.rules.iter().any(|(ch, line)| {
            if ch != "POSTROUTING" {
                return false;
            }
            let args = split_args(line);
            arg_after(&args, "-j") == Some(chain.as_str())
                && arg_after(&args, "-s").is_some_and(|s| s == format!("{host}/{plen}") || s == host.to_string())
        });
        if !present {
            lines.push(format!("-A POSTROUTING -s {host} -j {chain} -m comment --comment {c}"));
        }
    }
    wrap_table("nat", &lines)
}

/// Restore lines removing the masquerade of the addresses `ips` (one family): their POSTROUTING
/// jumps to `chain` (also one in the form very old plugins wrote, `-s <subnet>`, which the
/// reference's `TeardownIPMasq` deletes "for downward compatibility"), and the chain itself once
/// no other jump uses it. Another interface of the same container on the same network shares the
/// chain (its name and comment have no ifname, as the reference's): its jumps and the chain stay,
/// so it keeps masquerading (the reference's DEL fails there, "Device or resource busy", after
/// flushing the chain); only the ACCEPT of a subnet of `ips` from which no remaining jump comes
/// goes. No addresses (the netns was gone): every jump and the chain.
pub fn masq_teardown_lines(state: &NatState, chain: &str, ips: &[IpNet]) -> Vec<String> {
    if ips.is_empty() {
        return chain_teardown_lines(state, chain);
    }
    let ours = |s: &str| {
        ips.iter().any(|ip| {
            let plen = ip.max_prefix_len();
            s == ip.addr().to_string()
                || s == format!("{}/{plen}", ip.addr())
                || (ip.prefix_len() < plen && s.parse::<IpNet>().is_ok_and(|n| n == ip.trunc()))
        })
    };
    let mut lines = Vec::new();
    let mut others: Vec<IpNet> = Vec::new();
    let mut other_jump = false;
    for (ch, line) in &state.rules {
        let args = split_args(line);
        if ch != "POSTROUTING" || arg_after(&args, "-j") != Some(chain) {
            continue;
        }
        let src = arg_after(&args, "-s");
        match (src.is_some_and(ours), line.strip_prefix("-A ")) {
            (true, Some(rest)) => lines.push(format!("-D {rest}")),
            _ => {
                other_jump = true;
                others.extend(
                    src.and_then(|s| s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))),
                );
            }
        }
    }
    if !other_jump {
        if state.chains.iter().any(|c| c == chain) {
            lines.push(format!("-F {chain}"));
            lines.push(format!("-X {chain}"));
        }
        return lines;
    }
    // the ACCEPT of a subnet of ours that no remaining jump's source lies in
    for (ch, line) in &state.rules {
        let args = split_args(line);
        if ch != chain || arg_after(&args, "-j") != Some("ACCEPT") || args.iter().any(|a| a == "!") {
            continue;
        }
        let Some(dst) = arg_after(&args, "-d").and_then(|d| d.parse::<IpNet>().ok()) else { continue };
        let mine = ips.iter().any(|ip| ip.trunc() == dst.trunc());
        let needed = others.iter().any(|o| dst.contains(&o.addr()));
        if let (true, false, Some(rest)) = (mine, needed, line.strip_prefix("-A ")) {
            lines.push(format!("-D {rest}"));
        }
    }
    lines
}

/// Restore lines removing chain `chain` and every POSTROUTING jump to it (empty: nothing exists).
pub fn chain_teardown_lines(state: &NatState, chain: &str) -> Vec<String> {
    chain_teardown_lines_from(state, "POSTROUTING", chain)
}

/// Restore lines removing chain `chain` and every jump to it from `entry`.
pub fn chain_teardown_lines_from(state: &NatState, entry: &str, chain: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (ch, line) in &state.rules {
        if ch != entry {
            continue;
        }
        let args = split_args(line);
        if arg_after(&args, "-j") == Some(chain) {
            if let Some(rest) = line.strip_prefix("-A ") {
                lines.push(format!("-D {rest}"));
            }
        }
    }
    if state.chains.iter().any(|c| c == chain) {
        lines.push(format!("-F {chain}"));
        lines.push(format!("-X {chain}"));
    }
    lines
}

/// `iptables-restore` input changing `table` with `lines` (None: nothing to change).
pub fn wrap_table(table: &str, lines: &[String]) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let mut out = format!("*{table}\n");
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// One family's part of [`IptablesBackend::teardown_each`].
#[derive(Debug)]
pub struct FamilyTeardown {
    /// IPv6 (`ip6tables`)?
    pub v6: bool,
    /// The table could be read (else `result` says why not, and nothing was changed).
    pub readable: bool,
    pub result: Result<()>,
}

/// Chains of `network` (recognised by comment + hash check) whose container is not valid.
pub fn gc_chains(state: &NatState, network: &str, valid: &[Attachment]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (ch, line) in &state.rules {
        if !ch.starts_with("CNI-") || out.contains(ch) {
            continue;
        }
        let args = split_args(line);
        let Some(cid) = arg_after(&args, "--comment").and_then(|c| comment_container_id(network, c)) else {
            continue;
        };
        if chain_name(network, &cid) != *ch {
            continue;
        }
        if !valid.iter().any(|a| a.container_id == cid) {
            out.push(ch.clone());
        }
    }
    out
}

/// Does an `iptables` binary on PATH work? As the reference's `utils.SupportsIPTables`: found by
/// a PATH lookup, and the filter table can be read.
///
/// The reference asks with `iptables -t filter -S INPUT 1 -w`; we first ask with the
/// `iptables-save` of every table that the plugin runs next anyway, and keep its output for that
/// ([`IptablesBackend::save_table`] takes it once): one exec of the iptables tool instead of two.
/// Only when that fails is the reference's exact probe run, so a node where it answers
/// differently decides as the reference does.
pub fn binary_works() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(bin) = std::env::split_paths(&path).map(|d| d.join("iptables")).find(|p| p.is_file()) else {
        return false;
    };
    if is_nft_variant(&bin) && super::nft_available() {
        // iptables-nft reads the filter table from nf_tables, which answers here: the probe
        // would succeed (it creates nothing, in a fresh namespace too)
        return true;
    }
    if let Some(text) = find_bin("iptables-save").and_then(|save| run_save(&save, None).ok()) {
        if let Ok(mut slot) = PREFETCHED.lock() {
            *slot = Some(text);
        }
        return true;
    }
    Command::new(bin)
        .args(["-t", "filter", "-S", "INPUT", "1", "-w"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Is `bin` iptables-nft (its links end at `xtables-nft-multi`, as Debian's alternatives and
/// every distribution's packages install it)? A wrapper script or anything else is not.
pub fn is_nft_variant(bin: &std::path::Path) -> bool {
    std::fs::canonicalize(bin).is_ok_and(|p| p.file_name().is_some_and(|n| n == "xtables-nft-multi"))
}

/// Is the family's restore tool (`ip[6]tables-restore`, found as it is run) iptables-nft?
fn tools_are_nft(v6: bool) -> bool {
    find_bin(&IptablesBackend::tool(v6, "restore")).is_some_and(|b| is_nft_variant(&b))
}

/// The IPv4 `iptables-save` output of every table read by [`binary_works`], until the first
/// [`IptablesBackend::save_table`] of IPv4 takes it.
static PREFETCHED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// `bin` (an `ip[6]tables-save`) with `-t table`, or of every table; its stdout.
fn run_save(bin: &std::path::Path, table: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(bin);
    if let Some(t) = table {
        cmd.args(["-t", t]);
    }
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Locates a binary in PATH, then in the usual sbin directories.
fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The iptables backend.
#[derive(Debug, Clone, Default)]
pub struct IptablesBackend;

impl IptablesBackend {
    fn tool(v6: bool, what: &str) -> String {
        format!("{}tables-{what}", if v6 { "ip6" } else { "ip" })
    }

    /// `ip[6]tables-save -t nat`.
    pub fn save(&self, v6: bool) -> Result<NatState> {
        self.save_table(v6, "nat")
    }

    /// Tears down part of `table` in each family of `families` (true = IPv6): the table is read,
    /// `plan` names the `-D`/`-F`/`-X` lines, and they are applied. Where iptables-nft holds the
    /// table the read and the change go over netlink ([`super::iptables_nft`]; re-read and
    /// re-planned when the table changed meanwhile), with no tool exec; else every family is
    /// read with `ip[6]tables-save` before any is changed (a read after a deleting commit waits in the tool's socket close for that commit's grace
    /// period: 3 ms for ip6tables-save, `strace -T`)
    /// and changed with one `ip[6]tables-restore`.
    pub fn teardown_each(
        &self,
        families: &[bool],
        table: &str,
        plan: impl Fn(bool, &NatState) -> Vec<String>,
    ) -> Vec<FamilyTeardown> {
        let reads: Vec<(bool, Result<NatState>)> =
            families.iter().map(|&v6| (v6, self.read(v6, table, false))).collect();
        reads
            .into_iter()
            .map(|(v6, st)| match st {
                Err(e) => FamilyTeardown { v6, readable: false, result: Err(e) },
                Ok(st) => FamilyTeardown { v6, readable: true, result: self.apply_teardown(v6, table, st, &plan) },
            })
            .collect()
    }

    /// `table` of one family: the output [`binary_works`] prefetched, else the native read
    /// (when iptables-nft holds the table and, if `exact`, every rule rendered exactly as
    /// `iptables-save` would print it), else `ip[6]tables-save -t <table>`.
    fn read(&self, v6: bool, table: &str, exact: bool) -> Result<NatState> {
        self.read_chains(v6, table, exact, None)
    }

    /// [`IptablesBackend::read`]; a native read has the rules of `only` alone, when given. An
    /// `exact` read (what a change is planned from) is native only where the node's restore
    /// tool is iptables-nft: with iptables-legacy installed, the rules go to x_tables (as the
    /// reference's would), even before a legacy table exists.
    fn read_chains(&self, v6: bool, table: &str, exact: bool, only: Option<&[String]>) -> Result<NatState> {
        if !v6 {
            if let Some(text) = PREFETCHED.lock().ok().and_then(|mut slot| slot.take()) {
                return Ok(parse_save_table(&text, table));
            }
        }
        let native = if exact && !tools_are_nft(v6) { None } else { super::iptables_nft::read_chains(v6, table, only) };
        match native {
            Some(Ok(st)) if !exact || st.native.as_ref().is_some_and(|h| h.exact) => return Ok(st),
            Some(Ok(_)) => tracing::debug!(table, v6, "a rule of the table is not rendered exactly; asking the tool"),
            Some(Err(e)) => tracing::debug!(table, v6, "native read failed ({e:#}); asking the tool"),
            None => {}
        }
        self.save_tool(v6, table)
    }

    /// `ip[6]tables-save -t <table>`, always exec'd (also what the tests compare the native
    /// read and write with).
    pub fn save_tool(&self, v6: bool, table: &str) -> Result<NatState> {
        let name = Self::tool(v6, "save");
        let bin = find_bin(&name).with_context(|| format!("{name} not found"))?;
        let text = run_save(&bin, Some(table)).with_context(|| format!("{name} -t {table} failed"))?;
        Ok(parse_save_table(&text, table))
    }

    /// One change of `table` in one family: read it ([`IptablesBackend::save_table`]), let
    /// `plan` write the `iptables-restore` input (None: nothing to do), and apply it: over
    /// netlink when the read was native and every line is one iptables-nft's encoding is known
    /// for ([`super::iptables_nft::write`]; read and planned again when the table changed
    /// meanwhile), else with one `iptables-restore`. When the tool refuses input planned from
    /// the native read, it is planned again from the tool's own read and restored once more.
    ///
    /// `reads` names the chains whose rules `plan` looks at (every chain's name is always
    /// there): a native read then dumps those alone, not the per-container chains that grow
    /// with the node.
    pub fn change(
        &self,
        v6: bool,
        table: &str,
        reads: &[&str],
        plan: impl Fn(&NatState) -> Result<Option<String>>,
    ) -> Result<()> {
        let only: Vec<String> = reads.iter().map(|c| c.to_string()).collect();
        let mut tries = 0;
        let (st, input) = loop {
            let st = self.read_chains(v6, table, true, Some(&only))?;
            let Some(input) = plan(&st)? else { return Ok(()) };
            if st.native.is_none() {
                break (st, input);
            }
            match super::iptables_nft::write::restore(v6, &st, &input) {
                Ok(super::iptables_nft::write::Outcome::Applied) => return Ok(()),
                Ok(super::iptables_nft::write::Outcome::Unsupported(why)) => {
                    tracing::debug!(table, v6, "not encoded natively ({why}); running the tool");
                    break (st, input);
                }
                Err(e) if super::iptables_nft::retry(&e) && tries < 4 => {
                    tries += 1;
                    tracing::debug!(table, v6, "iptables-nft table changed meanwhile; reading it again: {e:#}");
                }
                Err(e) => {
                    tracing::debug!(table, v6, "native write failed ({e:#}); running the tool");
                    break (st, input);
                }
            }
        };
        match self.restore(v6, &input) {
            Err(e) if st.native.is_some() => {
                tracing::debug!(
                    table,
                    v6,
                    "restore planned from the native read failed ({e:#}); reading with the tool"
                );
                let st = self.save_tool(v6, table)?;
                match plan(&st)? {
                    Some(input) => self.restore(v6, &input),
                    None => Ok(()),
                }
            }
            r => r,
        }
    }

    fn apply_teardown(
        &self,
        v6: bool,
        table: &str,
        mut st: NatState,
        plan: &impl Fn(bool, &NatState) -> Vec<String>,
    ) -> Result<()> {
        // a few attempts guarded by the generation, then (busy tables: every other writer's
        // commit makes a guarded one stale) by rule handle alone, re-read when something is gone
        for attempt in 0..12 {
            let lines = plan(v6, &st);
            let Some(input) = wrap_table(table, &lines) else { return Ok(()) };
            if st.native.is_none() {
                return self.restore(v6, &input);
            }
            match super::iptables_nft::apply(v6, table, &st, &lines, attempt < 3) {
                Err(e) if super::iptables_nft::retry(&e) => {
                    tracing::debug!(table, v6, "iptables-nft table changed meanwhile; reading it again: {e:#}");
                    st = self.read(v6, table, false)?;
                }
                r => return r,
            }
        }
        bail!("the {table} table kept changing during the teardown")
    }

    /// `table` as `ip[6]tables-save -t <table>` prints it: read over netlink where iptables-nft
    /// holds it and every rule renders exactly, else by the tool (for IPv4 the first time, the
    /// output of every table that [`binary_works`] read just before, if it ran).
    pub fn save_table(&self, v6: bool, table: &str) -> Result<NatState> {
        self.read(v6, table, true)
    }

    /// One `ip[6]tables-restore --noflush -w` with `input` on stdin. The tool's netfilter
    /// socket is parked (`sys::feed`), so a deleting commit's grace period is not waited for.
    pub fn restore(&self, v6: bool, input: &str) -> Result<()> {
        let name = Self::tool(v6, "restore");
        let bin = find_bin(&name).with_context(|| format!("{name} not found"))?;
        tracing::debug!(tool = %name, input, "iptables-restore");
        let fed = crate::sys::feed::run_feeding(Command::new(&bin).args(["--noflush", "-w"]), input.as_bytes())
            .with_context(|| format!("running {name}"))?;
        if !fed.status.success() {
            bail!("{name} failed: {} (input: {input:?})", String::from_utf8_lossy(&fed.stderr).trim());
        }
        tracing::debug!(tool = %name, parked = fed.parked, "iptables-restore done");
        Ok(())
    }

    /// Can iptables work here (`iptables-save -t nat` answers)?
    pub fn usable(&self) -> bool {
        self.save_tool(false, "nat").is_ok()
    }

    fn families(ips: &[IpNet]) -> [(bool, Vec<IpNet>); 2] {
        [
            (false, ips.iter().filter(|i| i.addr().is_ipv4()).copied().collect()),
            (true, ips.iter().filter(|i| i.addr().is_ipv6()).copied().collect()),
        ]
    }
}

impl MasqBackend for IptablesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    fn check_masquerade(&self, network: &str, container_id: &str, _ifname: &str, ips: &[IpNet]) -> Result<()> {
        let chain = chain_name(network, container_id);
        for (v6, fam_ips) in Self::families(ips) {
            if fam_ips.is_empty() {
                continue;
            }
            let st = self.save(v6)?;
            if !st.chains.contains(&chain) {
                bail!("masquerade chain {chain} does not exist");
            }
            for ip in &fam_ips {
                let plen = if v6 { 128 } else { 32 };
                let src = [format!("{}/{plen}", ip.addr()), ip.addr().to_string()];
                let jump = st.rules.iter().any(|(c, l)| {
                    let a = split_args(l);
                    c == "POSTROUTING"
                        && arg_after(&a, "-j") == Some(chain.as_str())
                        && arg_after(&a, "-s").is_some_and(|s| src.iter().any(|x| x == s))
                });
                if !jump {
                    bail!("no POSTROUTING rule sends {} to {chain}", ip.addr());
                }
            }
        }
        Ok(())
    }

    fn ensure_masquerade(&self, network: &str, container_id: &str, _ifname: &str, ips: &[IpNet]) -> Result<()> {
        // As the reference: ifname is not part of the iptables layout.
        for (v6, fam_ips) in Self::families(ips) {
            if fam_ips.is_empty() {
                continue;
            }
            // masq_setup_input reads the rules of POSTROUTING and of the container's chain
            let chain = chain_name(network, container_id);
            self.change(v6, "nat", &["POSTROUTING", &chain], |st| {
                Ok(masq_setup_input(st, network, container_id, &fam_ips))
            })?;
        }
        Ok(())
    }

    fn remove_masquerade(&self, network: &str, container_id: &str, _ifname: &str, ips: &[IpNet]) -> Result<()> {
        let chain = chain_name(network, container_id);
        // Families with addresses; with none given, both (the chain may exist in either).
        let mut fams: Vec<bool> = ips.iter().map(|i| i.addr().is_ipv6()).collect();
        if fams.is_empty() {
            fams = vec![false, true];
        }
        fams.dedup();
        let fams: Vec<bool> = [false, true].into_iter().filter(|f| fams.contains(f)).collect();
        let errs: Vec<String> = self
            .teardown_each(&fams, "nat", |v6, st| {
                let fam: Vec<IpNet> = ips.iter().filter(|i| i.addr().is_ipv6() == v6).copied().collect();
                masq_teardown_lines(st, &chain, &fam)
            })
            .into_iter()
            .filter_map(|t| t.result.err().map(|e| format!("{e:#}")))
            .collect();
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("{}", errs.join("; "))
        }
    }

    fn gc_masquerade(&self, network: &str, valid: &[Attachment]) -> Result<()> {
        let plan = |_: bool, st: &NatState| {
            gc_chains(st, network, valid).iter().flat_map(|ch| chain_teardown_lines(st, ch)).collect()
        };
        for t in self.teardown_each(&[false, true], "nat", plan) {
            match t.result {
                Err(e) if t.v6 && !t.readable => tracing::debug!("ip6tables unavailable for GC: {e:#}"),
                r => r?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 13:40:00 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-XYZ - [0:0]
-A POSTROUTING -s 198.18.0.5/32 -m comment --comment "name: \"net\" id: \"c1\"" -j CNI-XYZ
-A POSTROUTING -s 198.18.0.9/32 -j MASQUERADE
COMMIT
"#;

    /// What `iptables -N` takes (checked against iptables 1.8.9 in a test netns), less what
    /// `iptables-save` would print unquoted after `-j`.
    #[test]
    fn chain_names_as_iptables_takes_them() {
        for ok in ["CNI-ADMIN", "é-ADMIN", "a'b", "a#b", "a,b", "x!", "tcp", "é", &"a".repeat(28), &"é".repeat(14)] {
            check_chain_name("k", ok).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "-x",
            "!x",
            &"a".repeat(29),
            &"é".repeat(15),
            "ACCEPT",
            "DROP",
            "a\"b",
            "a\\b",
            "a\nb",
            "a\u{a0}b",
        ] {
            let e = check_chain_name("k", bad).unwrap_err();
            assert_eq!(CniError::from_anyhow(&e).code, crate::cni::code::INVALID_CONFIG, "{bad:?}");
        }
    }

    #[test]
    fn comments_roundtrip() {
        assert_eq!(comment_container_id("net", &comment("net", "a\"b\\c")).as_deref(), Some("a\"b\\c"));
        assert_eq!(comment_container_id("other", &comment("net", "x")), None);
    }

    #[test]
    fn comments_quote_control_characters_as_go() {
        // Go's strconv.Quote: \a \b \f \n \r \t \v by name, other C0 and DEL as \x, C1 as \u
        let id = "a\u{7}b\u{8}\u{c}\n\r\t\u{b}\u{1}\u{7f}\u{85}\"\\z";
        assert_eq!(comment("n", id), r#"name: "n" id: "a\ab\b\f\n\r\t\v\x01\x7f\u0085\"\\z""#);
        assert_eq!(comment_container_id("n", &comment("n", id)).as_deref(), Some(id));
        assert_eq!(go_unquote(r#""\u2028\U0001f600""#).as_deref(), Some("\u{2028}\u{1f600}"));
    }

    #[test]
    fn parse_and_split_save_output() {
        let st = parse_save(SAVE);
        assert_eq!(st.chains, vec!["PREROUTING", "POSTROUTING", "CNI-XYZ"]);
        assert_eq!(st.rules.len(), 2);
        let args = split_args(&st.rules[0].1);
        assert_eq!(arg_after(&args, "--comment"), Some(r#"name: "net" id: "c1""#));
        assert_eq!(arg_after(&args, "-j"), Some("CNI-XYZ"));
    }

    #[test]
    fn teardown_removes_jumps_then_chain() {
        let st = parse_save(SAVE);
        let lines = chain_teardown_lines(&st, "CNI-XYZ");
        assert_eq!(
            lines,
            vec![
                r#"-D POSTROUTING -s 198.18.0.5/32 -m comment --comment "name: \"net\" id: \"c1\"" -j CNI-XYZ"#,
                "-F CNI-XYZ",
                "-X CNI-XYZ",
            ]
        );
        assert!(chain_teardown_lines(&st, "CNI-NOPE").is_empty());
    }

    #[test]
    fn setup_input_is_one_batch_and_skips_existing_jump() {
        let chain = chain_name("net", "c1");
        let save = SAVE.replace("CNI-XYZ", &chain);
        let st = parse_save(&save);
        let ips: Vec<IpNet> = vec!["198.18.0.5/24".parse().unwrap(), "198.18.0.6/24".parse().unwrap()];
        let input = masq_setup_input(&st, "net", "c1", &ips).unwrap();
        let c = r#""name: \"net\" id: \"c1\"""#;
        assert_eq!(
            input,
            format!(
                "*nat\n-A {chain} -d 198.18.0.0/24 -j ACCEPT -m comment --comment {c}\n\
                 -A {chain} ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment {c}\n\
                 -A POSTROUTING -s 198.18.0.6 -j {chain} -m comment --comment {c}\nCOMMIT\n"
            )
        );
        // a missing chain is declared
        let input = masq_setup_input(&parse_save(SAVE), "net", "c1", &ips).unwrap();
        assert!(input.starts_with(&format!("*nat\n:{chain} - [0:0]\n")), "{input}");
    }

    /// `nat` after eth0 (198.18.5.4/24) of container c4 on network brnet, as iptables-save
    /// prints it.
    fn masq_saved(chain: &str) -> String {
        let c = r#""name: \"brnet\" id: \"c4\"""#;
        format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:{chain} - [0:0]\n\
             -A POSTROUTING -s 198.18.5.4/32 -m comment --comment {c} -j {chain}\n\
             -A {chain} -d 198.18.5.0/24 -m comment --comment {c} -j ACCEPT\n\
             -A {chain} ! -d 224.0.0.0/4 -m comment --comment {c} -j MASQUERADE\nCOMMIT\n"
        )
    }

    /// Regression: the second interface's setup redeclared (flushed) the shared chain, losing the
    /// first subnet's ACCEPT. As the reference's AppendUnique: only what is missing is appended.
    #[test]
    fn masq_setup_of_a_second_interface_appends_only_what_is_missing() {
        let chain = chain_name("brnet", "c4");
        let st = parse_save(&masq_saved(&chain));
        let c = r#""name: \"brnet\" id: \"c4\"""#;
        let eth1: Vec<IpNet> = vec!["198.18.6.7/24".parse().unwrap()];
        assert_eq!(
            masq_setup_input(&st, "brnet", "c4", &eth1).unwrap(),
            format!(
                "*nat\n-A {chain} -d 198.18.6.0/24 -j ACCEPT -m comment --comment {c}\n\
                 -A POSTROUTING -s 198.18.6.7 -j {chain} -m comment --comment {c}\nCOMMIT\n"
            )
        );
        // everything of eth0 is there: nothing to do
        let eth0: Vec<IpNet> = vec!["198.18.5.4/24".parse().unwrap()];
        assert_eq!(masq_setup_input(&st, "brnet", "c4", &eth0), None);
    }

    #[test]
    fn masq_teardown_keeps_what_another_interface_needs_and_takes_a_legacy_jump() {
        let chain = chain_name("brnet", "c4");
        let c = r#""name: \"brnet\" id: \"c4\"""#;
        let both = masq_saved(&chain).replace(
            "COMMIT",
            &format!(
                "-A POSTROUTING -s 198.18.6.7/32 -m comment --comment {c} -j {chain}\n\
                 -A {chain} -d 198.18.6.0/24 -m comment --comment {c} -j ACCEPT\nCOMMIT"
            ),
        );
        let st = parse_save(&both);
        let eth1: Vec<IpNet> = vec!["198.18.6.7/24".parse().unwrap()];
        assert_eq!(
            masq_teardown_lines(&st, &chain, &eth1),
            vec![
                format!("-D POSTROUTING -s 198.18.6.7/32 -m comment --comment {c} -j {chain}"),
                format!("-D {chain} -d 198.18.6.0/24 -m comment --comment {c} -j ACCEPT"),
            ]
        );
        // eth0's subnet ACCEPT stays while eth1 (same subnet here) still jumps
        let same: Vec<IpNet> = vec!["198.18.6.9/24".parse().unwrap()];
        let st2 = parse_save(&both.replace("198.18.5.4/32", "198.18.6.9/32"));
        assert_eq!(masq_teardown_lines(&st2, &chain, &same).len(), 1);
        // the legacy form of the jump (-s <subnet>) is this address's: the chain goes with it
        let legacy = parse_save(&masq_saved(&chain).replace("-s 198.18.5.4/32", "-s 198.18.5.0/24"));
        let eth0: Vec<IpNet> = vec!["198.18.5.4/24".parse().unwrap()];
        assert_eq!(
            masq_teardown_lines(&legacy, &chain, &eth0),
            vec![
                format!("-D POSTROUTING -s 198.18.5.0/24 -m comment --comment {c} -j {chain}"),
                format!("-F {chain}"),
                format!("-X {chain}"),
            ]
        );
    }

    #[test]
    fn canonical_rule_is_what_iptables_save_prints_back() {
        let c = |l: &str| canonical_rule(&split_args(l));
        // restore input as the plugins plan it, and the line iptables-save prints for it
        let pairs = [
            (
                r#"-m comment --comment "dnat name: \"n\" id: \"c\"" -m multiport -p tcp --destination-ports 8080,9090 -j CNI-DN-x"#,
                r#"-p tcp -m comment --comment "dnat name: \"n\" id: \"c\"" -m multiport --dports 8080,9090 -j CNI-DN-x"#,
            ),
            (
                "-p tcp --dport 8080 -d 198.18.9.1 -s 198.18.0.5/24 -j CNI-HOSTPORT-SETMARK",
                "-s 198.18.0.0/24 -d 198.18.9.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
            ),
            ("-p udp --dport 53 -s 127.0.0.1 -j X", "-s 127.0.0.1/32 -p udp -m udp --dport 53 -j X"),
            (
                "-p TCP --dport 1 -j DNAT --to-destination [fd00::5]:80",
                "-p tcp -m tcp --dport 1 -j DNAT --to-destination [fd00::5]:80",
            ),
            ("! -d 224.0.0.0/4 -j MASQUERADE", "! --destination 224.0.0.0/4 --jump MASQUERADE"),
            ("-p tcp --dport 1 -s 0.0.0.0/0 -j X", "-p tcp -m tcp --dport 1 -j X"),
            ("-p tcp --dport 1 -s ::/0 -j X", "-p tcp -m tcp --dport 1 -j X"),
        ];
        for (planned, saved) in pairs {
            assert_eq!(c(planned), c(saved), "{planned} / {saved}");
        }
        // a port, an address, a protocol, a target option or a negation that differs is another rule
        let base = "-p tcp --dport 8080 -j DNAT --to-destination 198.18.0.5:80";
        for other in [
            "-p tcp --dport 80 -j DNAT --to-destination 198.18.0.5:80",
            "-p tcp --dport 8080 -j DNAT --to-destination 198.18.0.5:8",
            "-p udp --dport 8080 -j DNAT --to-destination 198.18.0.5:80",
            "-p tcp --dport 8080 -d 198.18.0.1 -j DNAT --to-destination 198.18.0.5:80",
            "-p tcp ! --dport 8080 -j DNAT --to-destination 198.18.0.5:80",
        ] {
            assert_ne!(c(base), c(other), "{other}");
        }
        assert_ne!(c("-m mark --mark 0x2000/0x2000 -j MASQUERADE"), c("-m mark --mark 0x20/0x20 -j MASQUERADE"));
    }

    #[test]
    fn gc_finds_only_invalid_chains_of_this_network() {
        let c1 = chain_name("net", "c1");
        let c2 = chain_name("net", "c2");
        let save = format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:{c1} - [0:0]\n:{c2} - [0:0]\n:CNI-FAKE - [0:0]\n\
             -A {c1} -d 198.18.0.0/24 -m comment --comment \"name: \\\"net\\\" id: \\\"c1\\\"\" -j ACCEPT\n\
             -A {c2} -d 198.18.0.0/24 -m comment --comment \"name: \\\"net\\\" id: \\\"c2\\\"\" -j ACCEPT\n\
             -A CNI-FAKE -m comment --comment \"name: \\\"net\\\" id: \\\"c3\\\"\" -j ACCEPT\nCOMMIT\n"
        );
        let st = parse_save(&save);
        let valid = vec![Attachment { container_id: "c1".into(), ifname: "eth0".into() }];
        assert_eq!(gc_chains(&st, "net", &valid), vec![c2]);
        assert!(gc_chains(&st, "other", &[]).is_empty());
    }
}
