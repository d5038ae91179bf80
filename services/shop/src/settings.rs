//! The environment variables, for `shop up --help` and `shop serve --help`: the settings
//! table the services read through ([`shop_shared::config::SETTINGS`]), so the help cannot
//! disagree with what they do.

use shop_shared::config::{Fallback, SETTINGS};

/// The help section listing every variable with its default.
pub fn help() -> String {
    let mut out = String::from(
        "Environment variables (every one has a default that works on a developer machine):\n",
    );
    for s in SETTINGS {
        let default = match s.default {
            Fallback::Value(v) => v,
            Fallback::Unset(text) | Fallback::Computed(text) => text,
        };
        out.push_str(&format!(
            "  {}\n      default: {}\n      {}\n",
            s.key,
            plain(default),
            plain(s.meaning)
        ));
    }
    out
}

/// Markdown's code marks removed.
fn plain(text: &str) -> String {
    text.replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_setting_with_its_default() {
        let help = help();
        assert!(
            help.contains("  AMQP_URL\n      default: amqp://guest:guest@127.0.0.1:5672/%2f\n"),
            "{help}"
        );
        assert!(
            help.contains("  PASSWORD_HASH_CONCURRENCY\n      default: the number of CPUs\n"),
            "{help}"
        );
        for key in ["<SERVICE>_DATABASE_URL", "RUST_LOG", "NO_COLOR", "SMTP_URL"] {
            assert!(
                help.contains(&format!("  {key}\n")),
                "{key} missing: {help}"
            );
        }
        assert!(!help.contains('`'), "{help}");
    }
}
