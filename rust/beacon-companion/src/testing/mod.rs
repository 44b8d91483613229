//! What the companion's unit tests drive its state machines with.

pub mod fake_caddy;
