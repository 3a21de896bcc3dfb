//! What appliance init needs from the transport layer alone: read one guestinfo variable and
//! print it, no runtime, no CLI parser. `cargo run -p toolbox-rpc --example ovfenv -- [KEY]`.
//!
//! The transport comes from TOOLBOX_TRANSPORT (default `auto`).

use std::io::Write;
use std::process::ExitCode;
use toolbox_rpc::detect::assume_vmware_from_env;
use toolbox_rpc::transport::connect_rpci;
use toolbox_rpc::Transport;

fn main() -> ExitCode {
    let key = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "guestinfo.ovfEnv".into());
    let transport: Transport = match std::env::var("TOOLBOX_TRANSPORT") {
        Ok(t) => match t.parse() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ovfenv: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => Transport::Auto,
    };
    let value = connect_rpci(&transport, assume_vmware_from_env(), true)
        .map_err(toolbox_rpc::RpciError::from)
        .and_then(|mut rpci| rpci.info_get(&key));
    match value {
        Ok(v) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&v).and_then(|()| out.write_all(b"\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ovfenv: {e}");
            ExitCode::FAILURE
        }
    }
}
