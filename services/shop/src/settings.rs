//! The environment variables, for `shop up --help` and `shop serve --help`. They are listed
//! once, in docs/configuration.md's table; the help renders that table, so the two cannot
//! disagree.

/// docs/configuration.md, as the binary was built.
const README: &str = include_str!("../../../docs/configuration.md");

/// One row of the configuration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The variable (or variables: `RETRY_BASE_MS, RETRY_FACTOR, …`).
    pub key: String,
    /// Its default.
    pub default: String,
    /// What it does.
    pub meaning: String,
}

/// The rows of docs/configuration.md's "Configuration" table, markdown removed.
pub fn settings() -> Vec<Setting> {
    let Some(section) = README.split("\n## Configuration\n").nth(1) else {
        return Vec::new();
    };
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and its rule
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            match cells.as_slice() {
                [key, default, meaning] => Some(Setting {
                    key: plain(key),
                    default: plain(default),
                    meaning: plain(meaning),
                }),
                _ => None,
            }
        })
        .collect()
}

fn plain(cell: &str) -> String {
    cell.trim().replace('`', "")
}

/// The help section listing every variable with its default.
pub fn help() -> String {
    let mut out = String::from(
        "Environment variables (every one has a default that works on a developer machine):\n",
    );
    for s in settings() {
        out.push_str(&format!(
            "  {}\n      default: {}\n      {}\n",
            s.key, s.default, s.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_the_settings_the_services_read_with_their_defaults() {
        let settings = settings();
        let find = |key: &str| {
            settings
                .iter()
                .find(|s| s.key == key)
                .unwrap_or_else(|| panic!("{key} is not in docs/configuration.md's table"))
        };
        assert_eq!(
            find("AMQP_URL").default,
            shop_shared::config::DEFAULT_AMQP_URL
        );
        assert_eq!(
            find("AUTH_JWKS_URL").default,
            shop_shared::config::DEFAULT_JWKS_URL
        );
        let defaults = shop_shared::messaging::MessagingConfig::default();
        assert_eq!(
            find("CONSUMER_PREFETCH").default,
            defaults.prefetch.to_string()
        );
        assert_eq!(
            find("CONSUMER_BATCH").default,
            defaults.batch_size.to_string()
        );
        assert_eq!(
            find("OUTBOX_BATCH").default,
            defaults.outbox_batch.to_string()
        );
        assert_eq!(
            find("METRICS_SAMPLE_INTERVAL_MS").default,
            defaults.metrics_interval.as_millis().to_string()
        );
        for key in [
            "<SERVICE>_DATABASE_URL",
            "<SERVICE>_GRPC_ADDR",
            "RUST_LOG",
            "NO_COLOR",
        ] {
            find(key);
        }
        let help = help();
        assert!(
            help.contains("  AMQP_URL\n      default: amqp://"),
            "{help}"
        );
    }
}
