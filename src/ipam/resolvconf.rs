//! Read a resolv.conf into result DNS, as host-local's `resolvConf` does.

use anyhow::Context;
use std::path::Path;

use crate::cni::result::Dns;

/// Parse resolv.conf text: `nameserver X` (each), `domain X` (last wins), `search A B…`
/// and `options A B…` (accumulated). Comments (`#`, `;`) and short lines are skipped.
pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some((key, rest)) = fields.split_first() else { continue };
        let Some(first) = rest.first() else { continue };
        match *key {
            "nameserver" => dns.nameservers.push((*first).to_string()),
            "domain" => dns.domain = Some((*first).to_string()),
            "search" => dns.search.extend(rest.iter().map(|s| s.to_string())),
            "options" => dns.options.extend(rest.iter().map(|s| s.to_string())),
            _ => {}
        }
    }
    dns
}

/// Read and parse a resolv.conf file.
pub fn load(path: &Path) -> anyhow::Result<Dns> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read resolvConf {}", path.display()))?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_reference() {
        let d = parse(
            "# comment\n; other\nnameserver 198.18.0.53\nnameserver fd00::53 ignored\n\
             domain a.example\ndomain b.example\nsearch x.example y.example\nsearch z.example\n\
             options ndots:5 rotate\nnameserver\nbogus line here\n   \n",
        );
        assert_eq!(d.nameservers, ["198.18.0.53", "fd00::53"]);
        assert_eq!(d.domain.as_deref(), Some("b.example"));
        assert_eq!(d.search, ["x.example", "y.example", "z.example"]);
        assert_eq!(d.options, ["ndots:5", "rotate"]);
        assert!(parse("").is_empty());
        assert!(load(Path::new("/nonexistent/resolv.conf")).is_err());
    }
}
