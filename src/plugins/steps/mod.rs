//! The steps the plugins are made of, one module per concern. A plugin's verb reads as a list
//! of these calls; anything specific to one plugin stays in that plugin's file.
//!
//! - [`ns`]: open CNI_NETNS (never the plugin's own namespace; a vanished one is fine on DEL)
//! - [`undo`]: the rollback stack of an ADD
//! - [`veth`]: the veth pair of bridge, ptp and vpc-routed, forwarding, host routes
//! - [`link`]: container links of the interface plugins (create-and-rename, masters, MTU, MAC, DEL)
//! - [`ipam`]: IPAM delegation and applying its result inside the container (ConfigureIface)
//! - [`check`]: the CHECK helpers (prevResult entries, link kind/MAC, addresses, routes)
//! - [`ipmasq`]: masquerading of bridge and ptp
//! - [`gc`]: GC steps that run to the end and report every failure

pub mod check;
pub mod gc;
pub mod ipam;
pub mod ipmasq;
pub mod link;
pub mod ns;
pub mod undo;
pub mod veth;

pub use ns::NsOrGone;
pub use undo::Undo;
