//! The composition root: which features the agent runs.
//!
//! The service ([`crate::service`]) knows no feature; this is the one place that picks them, so
//! `toolbox run`, the tests and a library user embedding the agent get the same set, and a
//! library user can add its own beside them.

use crate::config::Config;
use crate::guestinfo::GuestInfo;
use crate::power::Power;
use crate::service::ServiceBuilder;
use crate::vix::feature::GuestOps;

/// A service builder with the agent's features: power operations, guest info and guest
/// operations. Guest operations stay off, with an error in the log, when the authentication
/// backend cannot be set up.
pub fn builder(config: Config) -> ServiceBuilder {
    let power = Power::new(config.power.clone());
    let guest_info = GuestInfo::new(&config.guestinfo);
    let guest_ops = GuestOps::new(&config);
    let mut b = ServiceBuilder::new(config)
        .feature(power)
        .feature(guest_info);
    match guest_ops {
        Ok(g) => b = b.feature(g),
        Err(e) => tracing::error!(error = %e, "guest operations are off"),
    }
    b
}
