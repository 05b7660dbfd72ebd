//! Configuration loading: a TOML file, then environment overrides, then strict deserialization.
//!
//! Any scalar can be overridden from the environment: `<PREFIX>__<SECTION>__<KEY>=value` sets `[section] key`
//! (for example `TIERLINE_EDGE__MQTT__PORT=1884`). Values are read as TOML when they parse as such (numbers,
//! booleans, quoted strings) and as plain strings otherwise. Unknown keys, from the file or the environment,
//! are errors that name the key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors from loading a configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file or an override is not valid, or a key is unknown.
    #[error("invalid configuration{}: {message}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Invalid {
        /// File path, if any.
        origin: Option<PathBuf>,
        /// Parser message, naming the key.
        message: String,
    },
    /// An environment override names a path that cannot be set.
    #[error("environment override {var} cannot be applied: {problem}")]
    Override {
        /// Variable name.
        var: String,
        /// What is wrong.
        problem: String,
    },
    /// A value passed parsing but is not acceptable.
    #[error("configuration field `{field}` {problem}")]
    Field {
        /// Dotted field name.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// Loads `T` from an optional TOML file plus `<prefix>__...` environment overrides.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_with_vars(path, env_prefix, &vars)
}

/// Like [`load`], with explicit variables (for tests).
pub fn load_with_vars<T: DeserializeOwned>(
    path: Option<&Path>,
    env_prefix: &str,
    vars: &[(String, String)],
) -> Result<T, ConfigError> {
    let mut table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid {
                    origin: Some(p.to_path_buf()),
                    message: e.to_string(),
                })?
        }
        None => toml::Table::new(),
    };
    let marker = format!("{env_prefix}__");
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(&marker) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        apply_override(&mut table, &keys, value).map_err(|problem| ConfigError::Override {
            var: name.clone(),
            problem,
        })?;
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
        origin: path.map(Path::to_path_buf),
        message: e.to_string(),
    })
}

fn apply_override(table: &mut toml::Table, keys: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut cur = table;
    for k in parents {
        if k.is_empty() {
            return Err("empty key segment".into());
        }
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{k}` is not a section"))?;
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    cur.insert(last.clone(), value);
    Ok(())
}

/// A byte count, written as an integer or a string with a unit (`"512 MiB"`, `"2GB"`, `"64k"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"<number> [unit]"` where unit is B, k/KB, KiB, M/MB, MiB, G/GB, GiB (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size like \"512 MiB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        Ok(Self((num * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        mqtt: Mqtt,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Mqtt {
        port: u16,
        #[serde(default)]
        host: String,
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[mqtt]\nport = 1\n").unwrap();
        let c: Cfg = load_with_vars(
            Some(&p),
            "T",
            &vars(&[
                ("T__MQTT__PORT", "1884"),
                ("T__MQTT__HOST", "broker.local"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!((c.mqtt.port, c.mqtt.host.as_str()), (1884, "broker.local"));
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[mqtt]\nport = 1\nprot = 2\n").unwrap();
        let err = load_with_vars::<Cfg>(Some(&p), "T", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot") && err.contains("c.toml"), "{err}");
    }

    #[test]
    fn unknown_key_from_env_is_named() {
        let err = load_with_vars::<Cfg>(
            None,
            "T",
            &vars(&[("T__MQTT__PORT", "1"), ("T__MQTT__HOTS", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(ByteSize::parse("512 MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("2GB").unwrap().0, 2_000_000_000);
        assert_eq!(ByteSize::parse("100").unwrap().0, 100);
        assert!(ByteSize::parse("12 parsecs").is_err());
    }
}
