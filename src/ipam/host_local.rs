//! TODO
use crate::applets::Applet;
use crate::cni::{CniResult, Ctx};

pub const APPLET: Applet = Applet {
    name: "host-local",
    about: "IPAM: allocate addresses from ranges, store on disk",
    min_version: "0.1.0",
    cni_args: None,
    add,
    del,
    check,
    gc: None,
    status: None,
};

fn add(_ctx: &Ctx) -> anyhow::Result<CniResult> {
    anyhow::bail!("not implemented")
}
fn del(_ctx: &Ctx) -> anyhow::Result<()> {
    anyhow::bail!("not implemented")
}
fn check(_ctx: &Ctx) -> anyhow::Result<()> {
    anyhow::bail!("not implemented")
}
