//! Writes `scripts/hot-text.ld`, the linker script that puts the functions a plugin run executes
//! first in the text, together (run by `scripts/hot-text.sh`, which makes the profiles).
//!
//!   cargo run --example hot_text -- BINARY OUT.ld PROFILE...
//!
//! BINARY is the unstripped profiling build the profiles were taken of (its symbol table is read
//! with `nm`). A PROFILE is either a callgrind output written with `--dump-instr=yes` (every
//! executed instruction's address is in it) or a text file of sampled instruction addresses, one
//! hex number per line (from `perf script`). Every function holding one of those addresses is
//! hot; the script lists them in the order the profiles first show them, so the first profile
//! should be the most common run's (the script passes the sampled bridge ADDs and DELs first).
//!
//! The script names input sections, and the compiler puts every function in a section of its
//! own, `.text.<symbol>` (`.text.unlikely.<symbol>` for cold-marked ones). The symbols are v0
//! mangled (the Makefile builds with `-C symbol-mangling-version=v0`), whose only build-dependent
//! parts are the crates' disambiguators (`Cs<hash>_`): those become wildcards, so the script
//! stays valid across toolchains and Cargo.lock updates; a function it no longer names just goes
//! to the ordinary text. musl's functions keep their C names; its assembly ones are matched by
//! archive member. Names the profile cannot see under valgrind (its own /proc/self/exe makes the
//! in-process delegation exec instead; it has no fsopen) are added by module.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, ExitCode};

/// Functions added by name (every function whose name contains one of these), right after the
/// first profile: the paths valgrind cannot run (see the module doc) and the exit, whose last
/// instructions no profile shows.
const ALSO_HOT: &[&str] = &[
    "9cni_multi3sys6sysctl",
    "9cni_multi3sys6detach",
    "9cni_multi3cni8delegate",
    "9cni_multi7logging",
    "3nix5fcntl6openat",
    "10socketpair",
    "14ControlMessage",
    "_Exit",
];

/// musl's assembly functions: one archive member each, whose code is in a plain `.text`.
const MUSL_ASM: &[&str] = &[
    "memcpy",
    "memmove",
    "memset",
    "__set_thread_area",
    "clone",
    "syscall_cp",
    "restore",
    "__unmapself",
    "sigsetjmp",
    "setjmp",
    "longjmp",
];

struct Sym {
    start: u64,
    end: u64,
    names: Vec<String>,
}

fn symbols(binary: &str) -> Result<Vec<Sym>, String> {
    let out = Command::new("nm").args(["-S", "--defined-only", binary]).output().map_err(|e| format!("nm: {e}"))?;
    if !out.status.success() {
        return Err(format!("nm {binary}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // address -> (size, names); zero-sized symbols (assembly) reach to the next symbol, at most
    // 256 bytes (the last one, `_fini`, has no next)
    let mut by_addr: BTreeMap<u64, (u64, Vec<String>)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (addr, size, kind, name) = match f.as_slice() {
            [a, s, k, n] => (*a, *s, *k, *n),
            [a, k, n] => (*a, "0", *k, *n),
            _ => continue,
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let (Ok(addr), Ok(size)) = (u64::from_str_radix(addr, 16), u64::from_str_radix(size, 16)) else {
            continue;
        };
        let e = by_addr.entry(addr).or_default();
        e.0 = e.0.max(size);
        e.1.push(name.to_string());
    }
    let starts: Vec<u64> = by_addr.keys().copied().collect();
    Ok(by_addr
        .into_iter()
        .enumerate()
        .map(|(i, (start, (size, names)))| {
            let next = starts.get(i + 1).copied().unwrap_or(u64::MAX);
            Sym { start, end: if size == 0 { next.min(start + 256) } else { start + size }, names }
        })
        .collect())
}

/// Instruction addresses of one profile, in file order; of a callgrind profile only those in
/// objects named `object_name` (`ob=` lines: a traced child may be another program).
fn addresses(path: &str, object_name: &str) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let callgrind = text.lines().take(20).any(|l| l.starts_with("positions:") || l.starts_with("events:"));
    let mut out = Vec::new();
    let mut last = 0u64;
    // ob=(id) name defines an object, ob=(id) names it again
    let mut objects: HashMap<String, bool> = HashMap::new();
    let mut ours = true;
    for line in text.lines() {
        if let Some(ob) = line.strip_prefix("ob=") {
            let (id, name) = ob.split_once(' ').unwrap_or((ob, ""));
            if !name.is_empty() {
                objects.insert(id.to_string(), name.rsplit('/').next() == Some(object_name));
            }
            ours = objects.get(id).copied().unwrap_or(name.rsplit('/').next() == Some(object_name));
            continue;
        }
        let Some(tok) = line.split_whitespace().next() else { continue };
        if callgrind && !ours {
            continue;
        }
        if !callgrind {
            if let Ok(a) = u64::from_str_radix(tok.trim_start_matches("0x"), 16) {
                out.push(a);
            }
            continue;
        }
        // a cost line starts with its position: absolute (0x..), relative (+n, -n) or the same (*)
        let a = if let Some(h) = tok.strip_prefix("0x") {
            u64::from_str_radix(h, 16).ok()
        } else if let Some(n) = tok.strip_prefix('+') {
            n.parse::<u64>().ok().map(|n| last.wrapping_add(n))
        } else if let Some(n) = tok.strip_prefix('-') {
            n.parse::<u64>().ok().map(|n| last.wrapping_sub(n))
        } else if tok == "*" {
            Some(last)
        } else {
            None
        };
        if let Some(a) = a {
            last = a;
            out.push(a);
        }
    }
    Ok(out)
}

/// The section pattern of a symbol: its build-dependent parts as wildcards (crate
/// disambiguators, the back-references that count bytes past them, legacy hashes).
fn pattern(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("_R") {
        return v0_pattern(rest);
    }
    if let Some(k) = name.rfind("17h") {
        let tail = &name[k + 3..];
        if tail.len() == 17 && tail.ends_with('E') && tail[..16].bytes().all(|c| c.is_ascii_hexdigit()) {
            return format!("{}17h*E", &name[..k]);
        }
    }
    name.to_string()
}

/// A v0 name (after `_R`): identifiers (`<len>[_]<bytes>`) are copied as they are; a crate
/// root's disambiguator (`Cs<base62>_`) and a back-reference (`B<base62>_`, a byte offset that
/// moves with the disambiguators' lengths) become wildcards. A generic's instantiating crate,
/// the crate root that ends the name, is whichever crate the compiler picked: any will do.
fn v0_pattern(rest: &str) -> String {
    let b = rest.as_bytes();
    let base62_then_underscore = |from: usize| -> Option<usize> {
        let n = b.get(from..)?.iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        (b.get(from + n) == Some(&b'_')).then_some(from + n)
    };
    let mut p = String::from("_R");
    let mut i = 0;
    let mut last_crate: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let len: usize = rest[i..i + digits].parse().unwrap_or(0);
            let mut j = i + digits;
            if b.get(j) == Some(&b'_') {
                j += 1;
            }
            let end = (j + len).min(b.len());
            p.push_str(&rest[i..end]);
            i = end;
            continue;
        }
        if c == b'C' && b.get(i + 1) == Some(&b's') {
            if let Some(u) = base62_then_underscore(i + 2) {
                last_crate = Some(p.len());
                p.push_str("Cs*_");
                i = u + 1;
                continue;
            }
        }
        if c == b'B' {
            if let Some(u) = base62_then_underscore(i + 1) {
                p.push_str("B*_");
                i = u + 1;
                continue;
            }
        }
        if c == b'K' || c == b'A' {
            // a const generic argument (K<type><hex>_) or an array (A<elem type><len const>):
            // a basic type's letter, then hex digits and `_`: copied, not read as an identifier
            let at = i + 1 + usize::from(c == b'A' && b.get(i + 1).is_some_and(|t| t.is_ascii_lowercase()));
            let typed = b.get(at).is_some_and(|t| b"abcdhijlmnostxy".contains(t));
            let hex = b.get(at + 1..).map_or(0, |r| r.iter().take_while(|d| d.is_ascii_hexdigit()).count());
            if typed && b.get(at + 1 + hex) == Some(&b'_') {
                p.push_str(&rest[i..=at + 1 + hex]);
                i = at + 2 + hex;
                continue;
            }
        }
        if c == b's' {
            // a disambiguator (impl, closure): stable, copied
            if let Some(u) = base62_then_underscore(i + 1) {
                p.push_str(&rest[i..=u]);
                i = u + 1;
                continue;
            }
        }
        p.push(c as char);
        i += 1;
    }
    // the name ends with a crate root (`Cs*_<len><ident>`) that follows a complete path
    if let Some(k) = last_crate {
        let tail = &p[k + 4..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && k > 2 && tail[..digits].parse::<usize>().ok() == Some(tail.len() - digits) {
            p.truncate(k);
            p.push('*');
        }
    }
    p
}

fn run() -> Result<(), String> {
    // an example has Rust's start-up, so its args are filled (clippy.toml warns for the binary)
    #[allow(clippy::disallowed_methods)]
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, out, profiles @ ..] = args.as_slice() else {
        return Err("usage: hot_text BINARY OUT.ld PROFILE...".into());
    };
    if profiles.is_empty() {
        return Err("no profile given".into());
    }
    let syms = symbols(binary)?;
    let object_name = binary.rsplit('/').next().unwrap_or(binary);
    let mut hot: Vec<usize> = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    let mut added = 0;
    for (k, p) in profiles.iter().enumerate() {
        for a in addresses(p, object_name)? {
            let i = syms.partition_point(|s| s.start <= a);
            if i == 0 {
                continue;
            }
            let s = &syms[i - 1];
            if a < s.end && seen.insert(i - 1) {
                hot.push(i - 1);
            }
        }
        if k == 0 {
            for (i, s) in syms.iter().enumerate() {
                if s.names.iter().any(|n| ALSO_HOT.iter().any(|m| n.contains(m))) && seen.insert(i) {
                    hot.push(i);
                    added += 1;
                }
            }
        }
    }
    let bytes: u64 = hot.iter().map(|&i| syms[i].end - syms[i].start).sum();
    let mut lines = vec!["*crt1.o(.text)".to_string()];
    lines.extend(MUSL_ASM.iter().map(|a| format!("*libc.a:{a}.lo(.text)")));
    let mut done: HashSet<String> = HashSet::new();
    for &i in &hot {
        for n in &syms[i].names {
            let p = pattern(n);
            if done.insert(p.clone()) {
                lines.push(format!("*(.text.{p} .text.unlikely.{p})"));
            }
        }
    }
    let mut text = String::from(
        "/* Generated by scripts/hot-text.sh (examples/hot_text.rs); do not edit. The functions a\n   \
         plugin run executes, first in the text and together: a run maps a few 64 KiB windows of\n   \
         the binary instead of nearly all of them (docs/bench.md, \"The exec\"). */\n\
         SECTIONS\n{\n  .text.hot :\n  {\n",
    );
    for l in &lines {
        text.push_str("    ");
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("  }\n}\nINSERT BEFORE .text;\n");
    std::fs::write(out, text).map_err(|e| format!("{out}: {e}"))?;
    eprintln!(
        "{out}: {} functions seen in {} profiles, {added} more by name, {bytes} bytes; {} patterns",
        hot.len() - added,
        profiles.len(),
        lines.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hot_text: {e}");
            ExitCode::FAILURE
        }
    }
}
