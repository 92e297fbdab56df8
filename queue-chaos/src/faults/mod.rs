//! The fault kinds, one module each.

pub mod crash;
pub mod restart;
pub mod network;
