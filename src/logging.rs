//! A minimal `tracing` subscriber: one line per event on stderr (or appended to a file), with a
//! UTC timestamp, the time since the run started its logger (`+0.265ms`: at debug level the steps
//! of an ADD or DEL show where its time goes), the level, the applet, the CNI command and the
//! container id.
//!
//! Level: `CNI_MULTI_LOG` = error|warn|info|debug|trace (default warn).
//! File: `CNI_MULTI_LOG_FILE`, or a `log` key with a path in the network config (set once the
//! config is parsed; the environment variable wins).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

struct State {
    level: Level,
    applet: String,
    command: String,
    container: String,
    file: Option<std::fs::File>,
    file_from_env: bool,
    /// When [`init`] ran (the first thing a run does).
    start: std::time::Instant,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

/// Parse a level name (case-insensitive); `None` for anything else.
pub fn parse_level(s: &str) -> Option<Level> {
    Some(match s.to_ascii_lowercase().as_str() {
        "error" => Level::ERROR,
        "warn" | "warning" => Level::WARN,
        "info" => Level::INFO,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        _ => return None,
    })
}

/// Install the subscriber (once per process). `get` reads the environment.
pub fn init(get: &dyn Fn(&str) -> Option<String>) {
    let level = get("CNI_MULTI_LOG").as_deref().and_then(parse_level).unwrap_or(Level::WARN);
    let file = get("CNI_MULTI_LOG_FILE").filter(|p| !p.is_empty()).and_then(|p| open(&p));
    let file_from_env = file.is_some();
    let state = State {
        level,
        applet: String::new(),
        command: String::new(),
        container: String::new(),
        file,
        file_from_env,
        start: std::time::Instant::now(),
    };
    if STATE.set(Mutex::new(state)).is_ok() {
        let _ = tracing::subscriber::set_global_default(Mini);
        crate::cni::delegate::set_in_process_scope(in_process_scope);
    }
}

/// What [`in_process_scope`] puts back.
struct Saved {
    applet: String,
    command: String,
    container: String,
    /// the caller's file, when the delegate got its own (not when CNI_MULTI_LOG_FILE chose it)
    file: Option<Option<std::fs::File>>,
}

/// An in-process delegate logs as it would exec'd ([`crate::cni::delegate::InProcessScope`]):
/// its applet, command and container id on every line, into its config's `log` file (stderr
/// without one) unless CNI_MULTI_LOG_FILE chose the file; the caller's context and file are
/// restored after it.
fn in_process_scope(plugin: &crate::cni::Plugin, ctx: &mut crate::cni::Ctx, run: &mut dyn FnMut(&mut crate::cni::Ctx)) {
    let own_file = !with_state(|s| s.file_from_env).unwrap_or(true);
    // opened before taking the lock, as set_file's caller does
    let file = if own_file {
        ctx.conf.get("log").and_then(|v| v.as_str()).filter(|p| !p.is_empty()).and_then(open)
    } else {
        None
    };
    let saved = with_state(|s| Saved {
        applet: std::mem::replace(&mut s.applet, plugin.name.to_string()),
        command: std::mem::replace(&mut s.command, ctx.command.as_str().to_string()),
        container: std::mem::replace(&mut s.container, ctx.container_id.clone()),
        file: own_file.then(|| std::mem::replace(&mut s.file, file)),
    });
    run(ctx);
    if let Some(saved) = saved {
        with_state(|s| {
            s.applet = saved.applet;
            s.command = saved.command;
            s.container = saved.container;
            if let Some(file) = saved.file {
                s.file = file;
            }
        });
    }
}

fn open(path: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // logs name containers and configs: private to root, like the store's files. Non-blocking:
    // a FIFO without a reader fails at once (ENXIO) instead of holding the plugin forever, and
    // one whose reader stops draining it loses lines to stderr rather than blocking a write
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .ok()
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    let m = STATE.get()?;
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    Some(f(&mut g))
}

/// Record who is logging (shown on every line). A no-op before [`init`].
pub fn set_context(applet: &str, command: &str, container_id: &str) {
    with_state(|s| {
        s.applet = applet.to_string();
        s.command = command.to_string();
        s.container = container_id.to_string();
    });
}

/// Log to `path` from now on (the config's `log` key), unless CNI_MULTI_LOG_FILE chose a file.
/// A no-op before [`init`] (unit tests never open files through this).
pub fn set_file(path: &str) {
    with_state(|s| {
        if !s.file_from_env && !path.is_empty() {
            if let Some(f) = open(path) {
                s.file = Some(f);
            }
        }
    });
}

/// Whether log lines go to a file (CNI_MULTI_LOG_FILE or a `log` key) rather than stderr.
pub fn writes_to_file() -> bool {
    with_state(|s| s.file.is_some()).unwrap_or(false)
}

struct Mini;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for Mini {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        with_state(|s| *meta.level() <= s.level).unwrap_or(false)
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        with_state(|s| tracing::level_filters::LevelFilter::from_level(s.level))
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        with_state(|s| {
            let line = format!(
                "{} +{:.3}ms {:5} {} {} {}:{}\n",
                timestamp(),
                s.start.elapsed().as_secs_f64() * 1000.0,
                event.metadata().level(),
                or_dash(&s.applet),
                or_dash(&s.command),
                or_dash(&s.container),
                fields.0
            );
            let written = s.file.as_mut().map(|f| f.write_all(line.as_bytes()).is_ok()).unwrap_or(false);
            if !written {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) without a date crate.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_millis())
}

fn format_utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil-from-days (proleptic Gregorian), days since 1970-01-01
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_795_440_638, 123), "2026-11-23T13:30:38.123Z");
        assert_eq!(timestamp().len(), 24);
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("DEBUG"), Some(Level::DEBUG));
        assert_eq!(parse_level("nope"), None);
    }
}
