//! What the three binaries share on the command line: the configuration
//! file argument, the version with its commit, and the exit for a
//! configuration that cannot work.

use std::path::PathBuf;

use crate::Settings;

/// `0.1.0 (3f2a…)`: the crate version and the git commit built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_COMMIT"), ")");

/// sysexits' `EX_CONFIG`. systemd's `RestartPreventExitStatus=78` then
/// stops restarting a service that would only fail the same way again.
pub const EX_CONFIG: i32 = 78;

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// TOML configuration file; environment variables
    /// VSFLEET_<SECTION>__<KEY> override it.
    #[arg(long, global = true, env = "VSFLEET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The settings, or the reason they cannot be read on stderr (once)
    /// and exit [`EX_CONFIG`].
    pub fn load_or_exit(&self, program: &str) -> Settings {
        match Settings::load(self.config.as_deref()) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("{program}: {error}");
                std::process::exit(EX_CONFIG);
            }
        }
    }
}
