//! The composition root: which features the agent runs.
//!
//! The service ([`crate::service`]) knows no feature; this is the one place that picks them, so
//! `toolbox run`, the tests and a library user embedding the agent get the same set, and a
//! library user can add its own beside them.

use crate::config::Config;
use crate::guestinfo::GuestInfo;
use crate::power::Power;
use crate::service::ServiceBuilder;

/// A service builder with the agent's features: power operations and guest info.
pub fn builder(config: Config) -> ServiceBuilder {
    let power = Power::new(config.power.clone());
    let guest_info = GuestInfo::new(&config.guestinfo);
    ServiceBuilder::new(config)
        .feature(power)
        .feature(guest_info)
}
