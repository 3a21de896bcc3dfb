//! The agent inside another program (appliance init): build the service, add a TCLO handler of
//! your own, run it on your runtime, stop it when you are done.
//!
//! `cargo run --example embedded -- unix:DIR` (start `vmx-sim serve DIR` first), or with no
//! argument to use the configured transport. It stops after 10 s or on Ctrl-C.

use std::time::Duration;
use toolbox::config::{Config, PowerMethod};
use toolbox::dispatch::Reply;

fn main() -> std::io::Result<()> {
    let mut config = Config::default();
    // The appliance's init handles shutdown itself.
    config.power.method = PowerMethod::None;
    if let Some(t) = std::env::args().nth(1) {
        config.transport = t.parse().map_err(std::io::Error::other)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let service = toolbox::agent::builder(config)
            // A TCLO command of the appliance's own: `Appliance_Status` answers "OK ready".
            .handler("Appliance_Status", |_ctx, _args| Reply::ok("ready"))
            .build();
        let stop = service.stop_handle();
        let ctx = service.context();
        let running = tokio::spawn(service.run());
        // RPCI from outside a handler: publish something to the host.
        if let Err(e) = ctx.rpci(b"info-set guestinfo.appliance.state booted").await {
            eprintln!("embedded: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.stop();
        let _ = running.await;
        Ok(())
    })
}
