mod harness;

mod bridge;
mod differential;
mod loopback;
mod protocol;
mod ptp;
