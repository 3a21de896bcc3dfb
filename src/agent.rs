//! The composition root: which features the agent runs.
//!
//! The service ([`crate::service`]) knows no feature; this is the one place that picks them, so
//! `toolbox run`, the tests and a library user embedding the agent get the same set, and a
//! library user can add its own beside them.

use crate::config::Config;
use crate::guestinfo::GuestInfo;
use crate::guestops::files::GuestFiles;
use crate::guestops::{HelperRegistry, HelperService, HelperSettings, ServiceId};
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

/// What `toolbox __guestops-helper` serves as the authenticated user: guest files (VIX file
/// operations and the HGFS server, which also serves the I/O streams of the user's programs)
/// and guest processes. Both reach the same process manager, set up from the agent's
/// `[process]` settings.
pub fn helper_registry() -> HelperRegistry {
    HelperRegistry::new()
        .with_factory(ServiceId::FILES, guest_files)
        .with_factory(
            crate::process::PROCESS_SERVICE,
            crate::process::service_factory,
        )
}

fn guest_files(settings: &HelperSettings) -> Box<dyn HelperService> {
    let streams = crate::process::ProcessFiles::new(crate::process::manager_for(settings));
    Box::new(GuestFiles::new().with_handler(Box::new(streams)))
}
