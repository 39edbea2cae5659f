//! containerd's registry host configuration for the agent: the
//! `certs.d/<registry>/hosts.toml` that makes the agent the registry's
//! mirror for `pull` and `resolve`, with the registry itself as `server`,
//! the fall-back containerd uses when the agent does not answer. Pure.

use std::fmt::Write as _;

/// The `hosts.toml` for `registry` (`host[:port]`, as image references name
/// it) served at `registry_url`, with the agent at `agent_url`.
pub fn hosts_toml(registry_url: &str, agent_url: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `swarmgate agent hosts`: pulls go through the node's swarmgate agent\n\
         # (layers over BitTorrent); when it does not answer, containerd uses `server`.\n\
         server = {}\n\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]",
        quote(registry_url.trim_end_matches('/')),
        quote(agent_url.trim_end_matches('/')),
    );
    out
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_the_pull_host_and_the_registry_the_server() {
        let text = hosts_toml("https://registry.example:5000/", "http://127.0.0.1:6990");
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(
            parsed["server"].as_str(),
            Some("https://registry.example:5000")
        );
        let host = parsed["host"]["http://127.0.0.1:6990"]
            .as_table()
            .expect("host table");
        let capabilities: Vec<_> = host["capabilities"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(capabilities, ["pull", "resolve"]);
    }

    #[test]
    fn odd_urls_stay_valid_toml() {
        let text = hosts_toml("http://a\"b", "http://c\\d\u{1}");
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["server"].as_str(), Some("http://a\"b"));
    }
}
