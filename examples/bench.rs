//! `make bench`: bridge + host-local ADD and DEL per pod, cni-multi against the reference plugins,
//! at several pod counts, in throwaway network namespaces. Prints a markdown report on stdout.
//!
//!   cargo run --example bench -- --ours target/x86_64-unknown-linux-musl/release/cni-multi \
//!       --reference /usr/lib/cni --pods 10,100,1000
//!
//! Needs root. Everything happens in namespaces this program makes: a private mount namespace
//! (so the netns bind mounts and the /sys remounts vanish with the process even if it is killed),
//! one "host" netns per measured run (the bridge lives there and the plugins run there) and one
//! netns per pod. Addresses come from 198.18.0.0/16. The machine's own namespace is never touched.
//!
//! Measured per scale: the kernel floor (the same veth create / delete done by one `ip -batch`
//! process), the reference, and cni-multi: wall time of each ADD and DEL process, mean per pod.
//! Peak RSS of one ADD and one DEL is read with getrusage(RUSAGE_CHILDREN) in a fresh probe
//! process that runs just that one invocation (so it covers the plugin and what it execs).

use anyhow::{anyhow, bail, Context, Result};
use argh::FromArgs;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(FromArgs)]
/// ADD/DEL per pod: cni-multi against the reference CNI plugins.
struct Args {
    /// the cni-multi binary
    #[argh(option)]
    ours: Option<PathBuf>,
    /// directory of the reference plugins (default /usr/lib/cni)
    #[argh(option, default = "PathBuf::from(\"/usr/lib/cni\")")]
    reference: PathBuf,
    /// pod counts, comma separated (default 10,100,1000)
    #[argh(option, default = "String::from(\"10,100,1000\")")]
    pods: String,
    /// internal: run one command and write its peak RSS (KiB) to this file
    #[argh(option)]
    rss_probe: Option<PathBuf>,
    /// internal: the command for --rss-probe
    #[argh(positional, greedy)]
    cmd: Vec<String>,
}

fn main() {
    let args: Args = argh::from_env();
    if let Some(out) = &args.rss_probe {
        std::process::exit(match rss_probe(out, &args.cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("rss probe: {e:#}");
                99
            }
        });
    }
    if let Err(e) = run(&args) {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// Run `cmd` (stdin/stdout/stderr inherited), then record the peak RSS of everything it waited for.
fn rss_probe(out: &Path, cmd: &[String]) -> Result<i32> {
    let (prog, rest) = cmd.split_first().ok_or_else(|| anyhow!("no command"))?;
    let status = Command::new(prog).args(rest).status()?;
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    fs::write(out, usage.max_rss().to_string())?;
    Ok(status.code().unwrap_or(98))
}

const PREFIX: &str = "cnb";
const BRIDGE: &str = "cnibench0";
const SUBNET: &str = "198.18.0.0/16";

struct Ctx {
    pid: u32,
    work: PathBuf,
    self_exe: PathBuf,
    root_netns: File,
}

/// One implementation under test: a CNI_PATH directory holding `bridge` and `host-local`.
struct Impl {
    label: &'static str,
    dir: PathBuf,
}

#[derive(Default, Clone)]
struct Timing {
    add: Vec<Duration>,
    del: Vec<Duration>,
    failure: Option<String>,
}

fn mean_ms(v: &[Duration]) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some(v.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1000.0 / v.len() as f64)
    }
}

fn run(args: &Args) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("run as root (the bench makes network namespaces)");
    }
    let scales: Vec<usize> = args
        .pods
        .split(',')
        .map(|s| s.trim().parse::<usize>().with_context(|| format!("bad pod count {s:?}")))
        .collect::<Result<_>>()?;
    if scales.iter().any(|&n| n == 0 || n > 4000) {
        bail!("pod counts must be 1..=4000");
    }
    // a private mount namespace: netns mounts and /sys remounts stay ours and die with us
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .context("make / a slave mount")?;

    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("cni-multi-bench-{pid}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let _work_guard = RemoveDir(work.clone());
    let ctx = Ctx {
        pid,
        work: work.clone(),
        self_exe: std::env::current_exe()?,
        root_netns: File::open("/proc/thread-self/ns/net")?,
    };

    let reference = Impl { label: "reference", dir: args.reference.clone() };
    for p in ["bridge", "host-local"] {
        if !reference.dir.join(p).is_file() {
            bail!("{} has no {p}", reference.dir.display());
        }
    }
    let ours = match &args.ours {
        Some(bin) => {
            let dir = work.join("ours-bin");
            fs::create_dir_all(&dir)?;
            let bin = fs::canonicalize(bin).with_context(|| format!("no binary at {}", bin.display()))?;
            symlink(&bin, dir.join("cni-multi"))?;
            for p in ["bridge", "host-local"] {
                symlink("cni-multi", dir.join(p))?;
            }
            Some((Impl { label: "cni-multi", dir }, bin))
        }
        None => None,
    };

    let mut rows = Vec::new();
    for &n in &scales {
        eprintln!("== {n} pods");
        let pods = PodSet::new(&ctx, n)?;
        let floor = kernel_floor(&ctx, &pods)?;
        eprintln!("   kernel floor: create {:.2} ms/pod, delete {:.2} ms/pod", floor.0, floor.1);
        let r = measure(&ctx, &reference, &pods)?;
        report_progress(&reference, &r);
        let o = match &ours {
            Some((imp, _)) => {
                let o = measure(&ctx, imp, &pods)?;
                report_progress(imp, &o);
                o
            }
            None => Timing { failure: Some("no --ours binary given".into()), ..Default::default() },
        };
        rows.push((n, floor, r, o));
    }

    eprintln!("== peak RSS");
    let rss_ref = peak_rss(&ctx, &reference)?;
    let rss_ours = match &ours {
        Some((imp, _)) => peak_rss(&ctx, imp)?,
        None => (None, None, Some("no --ours binary".into())),
    };
    let sizes = Sizes {
        ref_pair: file_size(&reference.dir.join("bridge")) + file_size(&reference.dir.join("host-local")),
        ref_all: dir_size(&reference.dir),
        ref_count: fs::read_dir(&reference.dir).map(|d| d.count()).unwrap_or(0),
        ours: ours.as_ref().map(|(_, b)| file_size(b)),
    };
    print!("{}", render(&rows, &rss_ref, &rss_ours, &sizes, &reference.dir));
    Ok(())
}

fn report_progress(imp: &Impl, t: &Timing) {
    match (&t.failure, mean_ms(&t.add), mean_ms(&t.del)) {
        (Some(f), _, _) => eprintln!("   {}: FAILED: {f}", imp.label),
        (None, Some(a), Some(d)) => eprintln!("   {}: ADD {a:.2} ms/pod, DEL {d:.2} ms/pod", imp.label),
        _ => eprintln!("   {}: no data", imp.label),
    }
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `ip -batch -` with the given lines; returns the wall time.
fn ip_batch(netns: Option<&str>, lines: &str) -> Result<Duration> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
    let t0 = Instant::now();
    child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?.write_all(lines.as_bytes())?;
    let status = child.wait()?;
    let dt = t0.elapsed();
    if !status.success() {
        bail!("ip -batch failed ({status})");
    }
    Ok(dt)
}

/// Network namespaces that are deleted on drop.
struct NetnsSet(Vec<String>);

impl NetnsSet {
    /// The guard exists before the first netns does, so a half-made set is removed too.
    fn create(names: Vec<String>) -> Result<NetnsSet> {
        let mut lines = String::new();
        for n in &names {
            let _ = writeln!(lines, "netns add {n}");
        }
        let set = NetnsSet(names);
        ip_batch(None, &lines)?;
        Ok(set)
    }
}

impl Drop for NetnsSet {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut lines = String::new();
        for n in &self.0 {
            let _ = writeln!(lines, "netns del {n}");
        }
        let _ = Command::new("ip").args(["-force", "-batch", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(lines.as_bytes());
            }
            c.wait()
        });
    }
}

struct PodSet {
    names: Vec<String>,
    _set: NetnsSet,
}

impl PodSet {
    fn new(ctx: &Ctx, n: usize) -> Result<PodSet> {
        let names: Vec<String> = (0..n).map(|i| format!("{PREFIX}-p{i}-{}", ctx.pid)).collect();
        let set = NetnsSet::create(names.clone())?;
        Ok(PodSet { names, _set: set })
    }
}

/// A fresh host netns with `lo` up; the bench thread is moved into it (and /sys remounted) while
/// it lives, and moved back on drop.
struct HostNs<'a> {
    ctx: &'a Ctx,
    _set: NetnsSet,
}

impl<'a> HostNs<'a> {
    fn enter(ctx: &'a Ctx, tag: &str) -> Result<HostNs<'a>> {
        let name = format!("{PREFIX}-h{tag}-{}", ctx.pid);
        let set = NetnsSet::create(vec![name.clone()])?;
        let f = File::open(format!("/run/netns/{name}"))?;
        setns(&f, CloneFlags::CLONE_NEWNET).context("setns into the host netns")?;
        remount_sys();
        let h = HostNs { ctx, _set: set };
        ip_batch(None, "link set lo up\n")?;
        Ok(h)
    }
}

impl Drop for HostNs<'_> {
    fn drop(&mut self) {
        let _ = setns(&self.ctx.root_netns, CloneFlags::CLONE_NEWNET);
        remount_sys();
    }
}

/// Make /sys show the current netns, as `ip netns exec` does (only in our mount namespace).
fn remount_sys() {
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    let _ = mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), None::<&str>);
}

fn kernel_floor(ctx: &Ctx, pods: &PodSet) -> Result<(f64, f64)> {
    let host = HostNs::enter(ctx, "floor")?;
    ip_batch(None, &format!("link add {BRIDGE} type bridge\nlink set {BRIDGE} up\n"))?;
    let (mut add, mut del) = (String::new(), String::new());
    for (i, p) in pods.names.iter().enumerate() {
        let _ = writeln!(add, "link add vb{i} type veth peer name eth0 netns {p}");
        let _ = writeln!(add, "link set vb{i} master {BRIDGE} up");
        let _ = writeln!(del, "link del vb{i}");
    }
    let n = pods.names.len() as f64;
    let t_add = ip_batch(None, &add)?;
    let t_del = ip_batch(None, &del)?;
    drop(host);
    Ok((t_add.as_secs_f64() * 1000.0 / n, t_del.as_secs_f64() * 1000.0 / n))
}

fn conf(data_dir: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"{BRIDGE}","isGateway":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{SUBNET}"}}]],"dataDir":"{}"}}}}"#,
        data_dir.display()
    )
}

fn cni_command(imp: &Impl, verb: &str, pod: &str, id: &str) -> Command {
    let mut c = Command::new(imp.dir.join("bridge"));
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &imp.dir);
    c
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn invoke(mut cmd: Command, stdin: &str) -> Result<(Outcome, Duration)> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?.write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let dt = t0.elapsed();
    Ok((
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        dt,
    ))
}

fn short(s: &str) -> String {
    let s = s.trim().replace('\n', " ");
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

/// A successful ADD prints a result with at least one IP.
fn check_add(o: &Outcome) -> Result<()> {
    if !o.ok {
        bail!("ADD exited non-zero: {} {}", short(&o.stdout), short(&o.stderr));
    }
    let v: serde_json::Value =
        serde_json::from_str(&o.stdout).map_err(|_| anyhow!("ADD printed no JSON result: {}", short(&o.stdout)))?;
    if v["ips"].as_array().is_none_or(|a| a.is_empty()) {
        bail!("ADD result has no ips: {}", short(&o.stdout));
    }
    Ok(())
}

fn measure(ctx: &Ctx, imp: &Impl, pods: &PodSet) -> Result<Timing> {
    let _host = HostNs::enter(ctx, imp.label)?;
    let data = ctx.work.join(format!("ipam-{}-{}", imp.label, pods.names.len()));
    let conf = conf(&data);
    let mut t = Timing::default();
    for (i, pod) in pods.names.iter().enumerate() {
        let (o, dt) = invoke(cni_command(imp, "ADD", pod, &format!("bench-{i}")), &conf)?;
        if let Err(e) = check_add(&o) {
            t.failure = Some(format!("pod {i}: {e:#}"));
            break;
        }
        if i == 0 {
            let eth0 = Command::new("ip").args(["-n", pod, "link", "show", "dev", "eth0"]).output()?;
            if !eth0.status.success() {
                t.failure = Some("ADD reported success but the pod has no eth0".into());
                break;
            }
        }
        t.add.push(dt);
    }
    if t.failure.is_none() {
        for (i, pod) in pods.names.iter().enumerate() {
            let (o, dt) = invoke(cni_command(imp, "DEL", pod, &format!("bench-{i}")), &conf)?;
            if !o.ok {
                t.failure = Some(format!("DEL pod {i}: {} {}", short(&o.stdout), short(&o.stderr)));
                break;
            }
            t.del.push(dt);
        }
    }
    if t.failure.is_none() {
        let left = Command::new("ip").args(["-o", "link", "show", "type", "veth"]).output()?;
        let n = String::from_utf8_lossy(&left.stdout).lines().count();
        if n > 0 {
            t.failure = Some(format!("{n} veths left after DEL"));
        }
    }
    // the pods are reused by the next run: make sure they are empty
    for pod in &pods.names {
        let _ = Command::new("ip").args(["-n", pod, "link", "del", "eth0"]).stderr(Stdio::null()).status();
    }
    Ok(t)
}

/// Peak RSS (KiB) of one ADD and one DEL, each in its own probe process.
fn peak_rss(ctx: &Ctx, imp: &Impl) -> Result<(Option<i64>, Option<i64>, Option<String>)> {
    let pods = PodSet::new(ctx, 1)?;
    let pod = pods.names.first().ok_or_else(|| anyhow!("no pod"))?.clone();
    let _host = HostNs::enter(ctx, &format!("rss{}", imp.label))?;
    let conf = conf(&ctx.work.join(format!("ipam-rss-{}", imp.label)));
    let mut res = Vec::new();
    for verb in ["ADD", "DEL"] {
        let out = ctx.work.join(format!("rss-{}-{verb}", imp.label));
        let plain = cni_command(imp, verb, &pod, "bench-rss");
        let mut probe = Command::new(&ctx.self_exe);
        probe.arg("--rss-probe").arg(&out).arg("--").arg(plain.get_program());
        probe.env_clear();
        for (k, v) in plain.get_envs() {
            if let Some(v) = v {
                probe.env(k, v);
            }
        }
        let (o, _) = invoke(probe, &conf)?;
        if verb == "ADD" {
            if let Err(e) = check_add(&o) {
                return Ok((None, None, Some(format!("{e:#}"))));
            }
        } else if !o.ok {
            return Ok((res.first().copied(), None, Some(format!("DEL failed: {}", short(&o.stdout)))));
        }
        let kib: i64 = fs::read_to_string(&out)?.trim().parse()?;
        res.push(kib);
    }
    Ok((res.first().copied(), res.get(1).copied(), None))
}

fn file_size(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

struct Sizes {
    ref_pair: u64,
    ref_all: u64,
    ref_count: usize,
    ours: Option<u64>,
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into())
}

fn fmt_ratio(r: Option<f64>, o: Option<f64>) -> String {
    match (r, o) {
        (Some(r), Some(o)) if o > 0.0 => format!("{:.1}×", r / o),
        _ => "–".into(),
    }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB ({b} B)", b as f64 / 1048576.0)
}

type Rss = (Option<i64>, Option<i64>, Option<String>);

fn render(
    rows: &[(usize, (f64, f64), Timing, Timing)],
    rss_ref: &Rss,
    rss_ours: &Rss,
    sizes: &Sizes,
    ref_dir: &Path,
) -> String {
    let mut s = String::new();
    let uname = Command::new("uname").arg("-r").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let _ = writeln!(s, "## bench: bridge + host-local, ms per pod (mean wall time of one plugin process)\n");
    let _ = writeln!(
        s,
        "kernel {}, {cpus} CPUs; reference = the plugins in {}\n",
        uname.unwrap_or_default(),
        ref_dir.display()
    );
    let _ = writeln!(
        s,
        "| pods | ADD reference | ADD cni-multi | ADD ratio (ref/ours) | DEL reference | DEL cni-multi | DEL ratio (ref/ours) | kernel floor create | kernel floor delete |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for (n, floor, r, o) in rows {
        let fail = |t: &Timing| if t.failure.is_some() { "FAILED".to_string() } else { String::new() };
        let (ra, rd) =
            (mean_ms(&r.add).filter(|_| r.failure.is_none()), mean_ms(&r.del).filter(|_| r.failure.is_none()));
        let (oa, od) =
            (mean_ms(&o.add).filter(|_| o.failure.is_none()), mean_ms(&o.del).filter(|_| o.failure.is_none()));
        let cell = |v: Option<f64>, t: &Timing| if t.failure.is_some() { fail(t) } else { fmt_ms(v) };
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            cell(ra, r),
            cell(oa, o),
            fmt_ratio(ra, oa),
            cell(rd, r),
            cell(od, o),
            fmt_ratio(rd, od),
            floor.0,
            floor.1
        );
        for (label, t) in [("reference", r), ("cni-multi", o)] {
            if let Some(f) = &t.failure {
                failures.push(format!("- {label} at {n} pods: {f}"));
            }
        }
    }
    let kib = |v: Option<i64>, err: &Option<String>| match (v, err) {
        (Some(k), _) => format!("{:.2} MiB", k as f64 / 1024.0),
        (None, Some(_)) => "FAILED".into(),
        (None, None) => "–".into(),
    };
    let _ = writeln!(s, "\n| | reference | cni-multi |\n|---|---:|---:|");
    let _ = writeln!(s, "| peak RSS, one ADD | {} | {} |", kib(rss_ref.0, &rss_ref.2), kib(rss_ours.0, &rss_ours.2));
    let _ = writeln!(s, "| peak RSS, one DEL | {} | {} |", kib(rss_ref.1, &rss_ref.2), kib(rss_ours.1, &rss_ours.2));
    let ours = sizes.ours.map(mib).unwrap_or_else(|| "–".into());
    let _ = writeln!(s, "| binaries for bridge + host-local | {} | {ours} |", mib(sizes.ref_pair));
    let _ = writeln!(s, "| every plugin | {} ({} files) | {ours} (1 file) |", mib(sizes.ref_all), sizes.ref_count);
    for (label, r) in [("reference", rss_ref), ("cni-multi", rss_ours)] {
        if let Some(e) = &r.2 {
            failures.push(format!("- {label} peak RSS: {e}"));
        }
    }
    let _ = writeln!(s, "\n{}", goals(rows, rss_ours));
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailures:\n{}", failures.join("\n"));
    }
    s
}

/// The targets of issue 2, checked against the numbers of this run.
fn goals(rows: &[(usize, (f64, f64), Timing, Timing)], rss_ours: &Rss) -> String {
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    let ok_means = |t: &Timing| {
        if t.failure.is_some() {
            (None, None)
        } else {
            (mean_ms(&t.add), mean_ms(&t.del))
        }
    };
    let mut lines = vec!["Goals:".to_string()];
    for (n, floor, r, o) in rows {
        let (ra, _) = ok_means(r);
        let (oa, od) = ok_means(o);
        let add = ra.zip(oa).map(|(r, o)| r >= 10.0 * o);
        let del = od.map(|d| d <= 1.2 * floor.1 + 1.0);
        lines.push(format!("- {n} pods: ADD ≥ 10× faster than the reference: {}", verdict(add)));
        lines.push(format!("- {n} pods: DEL ≤ 1.2 × kernel floor + 1 ms: {}", verdict(del)));
    }
    let at = |n: usize| rows.iter().find(|r| r.0 == n).and_then(|r| ok_means(&r.3).0);
    let scale = at(100).zip(at(1000)).map(|(a100, a1000)| a1000 <= 1.2 * a100);
    lines.push(format!("- ADD per pod at 1000 pods ≤ 1.2 × at 100 pods: {}", verdict(scale)));
    let rss = match (rss_ours.0, rss_ours.1) {
        (Some(a), Some(d)) => Some(a.max(d) <= 2048),
        _ => None,
    };
    lines.push(format!("- peak RSS ≤ 2 MiB: {}", verdict(rss)));
    lines.join("\n")
}
