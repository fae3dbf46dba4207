//! The node's log: `tracing` to standard error, as text (colour only on a
//! terminal) or as one JSON object a line, filtered by `RUST_LOG` or else
//! `--log-level`; the filter can be swapped at run time (SIGHUP).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// Swaps the log filter of a running node.
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it wins over the config, at start and on reload.
    from_env: bool,
}

impl LogLevel {
    /// Sets the filter to `level` (unless `RUST_LOG` rules); an error names why.
    pub fn set(&self, level: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let filter = filter_of(level)?;
        self.handle
            .modify(|f| *f = filter)
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// Parses a level or a `RUST_LOG`-style filter, for the config check.
pub fn filter_of(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("config key `log_level`: {level:?}: {e}"))
}

/// Installs the global subscriber.
pub fn init(level: &str, json: bool) -> Result<LogLevel, String> {
    let (filter, from_env) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => (
            EnvFilter::try_new(&env).map_err(|e| format!("RUST_LOG {env:?}: {e}"))?,
            true,
        ),
        _ => (filter_of(level)?, false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init();
    } else {
        let ansi = std::io::stderr().is_terminal();
        registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init();
    }
    Ok(LogLevel { handle, from_env })
}
