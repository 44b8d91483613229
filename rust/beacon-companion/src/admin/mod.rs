//! Caddy's Admin API from the companion's side: where it listens and a client for it
//! ([`client`]), the beacon module's routes as typed requests and answers ([`beacon_api`]),
//! every upstream Caddy proxies to with its requests in flight ([`proxy_upstreams`]), and reading its JSON config
//! ([`config_tree`]).

pub mod beacon_api;
pub mod client;
pub mod config_tree;
pub mod proxy_upstreams;

pub use client::{AdminAddress, AdminClient, AdminResponse};
