//! The contract every driver implements: the [`Driver`](driver::Driver) trait and its
//! [`Capabilities`](driver::Capabilities), the messages and deliveries that cross it, its
//! errors, URL options and registration, and what an application can ask of a backend
//! ([`needs`], [`profile`]). A driver crate needs only this part.

pub mod driver;
pub(crate) mod error;
pub(crate) mod message;
pub mod needs;
pub mod options;
pub mod profile;
pub(crate) mod registry;
