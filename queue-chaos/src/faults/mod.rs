//! The fault kinds, one module each.

pub mod crash;
pub mod hostile;
pub mod network;
pub mod poison;
pub mod restart;
