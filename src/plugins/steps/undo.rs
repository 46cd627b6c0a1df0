//! The undo stack of an ADD.

use anyhow::Result;

/// Each successful step pushes its inverse; unless `commit` is called, dropping the stack runs
/// the inverses in reverse order (errors are logged, not returned, and do not stop the others).
#[derive(Default)]
pub struct Undo {
    steps: Vec<(&'static str, UndoStep)>,
}

type UndoStep = Box<dyn FnOnce() -> Result<()>>;

impl Undo {
    pub fn push(&mut self, what: &'static str, f: impl FnOnce() -> Result<()> + 'static) {
        self.steps.push((what, Box::new(f)));
    }
    /// An inverse that runs in the namespace at `netns`, on an rtnetlink socket opened there
    /// when it runs (the ADD's own sockets do not outlive it).
    pub fn push_in(
        &mut self,
        what: &'static str,
        netns: &str,
        f: impl FnOnce(&mut crate::netlink::Netlink) -> Result<()> + 'static,
    ) {
        let path = netns.to_string();
        self.push(what, move || f(&mut crate::netlink::Netlink::in_netns(&super::ns::reopen(&path)?)?));
    }

    /// The ADD succeeded: keep everything.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((what, f)) = self.steps.pop() {
            if let Err(e) = f() {
                tracing::warn!("rollback of {what} failed: {e:#}");
            } else {
                tracing::debug!("rolled back {what}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<&'static str>>>;

    /// An undo step that records its name in `log`, and fails when asked to.
    fn step(log: &Log, name: &'static str, fail: bool) -> impl FnOnce() -> Result<()> + 'static {
        let log = log.clone();
        move || {
            log.borrow_mut().push(name);
            if fail {
                anyhow::bail!("{name} failed");
            }
            Ok(())
        }
    }

    #[test]
    fn dropped_stack_unwinds_in_reverse_and_past_failures() {
        let log = Log::default();
        {
            let mut u = Undo::default();
            u.push("ipam", step(&log, "ipam", false));
            u.push("veth", step(&log, "veth", true));
            u.push("masq", step(&log, "masq", false));
        }
        assert_eq!(*log.borrow(), ["masq", "veth", "ipam"]);
    }

    #[test]
    fn committed_stack_runs_nothing() {
        let log = Log::default();
        let mut u = Undo::default();
        u.push("ipam", step(&log, "ipam", false));
        u.push("veth", step(&log, "veth", false));
        u.commit();
        assert!(log.borrow().is_empty());
    }
}
