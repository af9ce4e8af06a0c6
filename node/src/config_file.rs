//! TOML configuration files for Fjord's command-line programs.
//!
//! Every option of a (sub)command can also come from a TOML file given with `--config FILE`
//! (or the `FJORD_CONFIG` environment variable): keys are the long option names
//! (`upload = "10M"`, `bootstrap = ["/ip4/..."]`, `play = true`), and `channel` for the
//! channel id. Precedence, strongest first: the command line, the option's environment
//! variable, the file, the built-in default. The file is turned into command-line arguments
//! for clap, so it is parsed and checked exactly like them; an unknown key is an error that
//! lists the known ones.

use std::ffi::OsString;
use std::path::Path;

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{path} is not valid TOML: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// A key that is not an option of the command.
    #[error("{path}: unknown key {key:?}; the options of `{command}` are: {known}")]
    UnknownKey {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// The command the file configures.
        command: String,
        /// The keys it accepts.
        known: String,
    },
    /// A value that cannot be an option's value (a table, say).
    #[error("{path}: the value of {key:?} must be a string, number, boolean or a list of them")]
    Value {
        /// The file.
        path: String,
        /// The key.
        key: String,
    },
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The command line `args` (program name first) with the options of the configuration file
/// it names (`--config FILE` or `FJORD_CONFIG`) added where neither the command line nor the
/// option's environment variable gives them. `command` is the program's clap command.
pub fn with_config_file(
    command: &clap::Command,
    args: Vec<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    let mut args = args;
    // Find and remove `--config FILE` / `--config=FILE`.
    let mut path: Option<OsString> = std::env::var_os("FJORD_CONFIG");
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if a == "--config" && i + 1 < args.len() {
            path = Some(args.remove(i + 1));
            args.remove(i);
            continue;
        }
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.into());
            args.remove(i);
            continue;
        }
        i += 1;
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let shown = Path::new(&path).display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: shown.clone(),
            reason: e.message().to_owned(),
        })?;
    // The subcommand the file configures: the first argument naming one.
    let mut target = command.clone();
    let mut name = command.get_name().to_owned();
    for a in args.iter().skip(1) {
        let a = a.to_string_lossy();
        if let Some(sub) = target.find_subcommand(a.as_ref()) {
            name = format!("{name} {}", sub.get_name());
            target = sub.clone();
            break;
        }
    }
    let given: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let positionals_on_line = count_positionals(&target, &given, &name);
    let mut extra: Vec<OsString> = Vec::new();
    let mut positional: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        let Some(arg) = target.get_arguments().find(|a| {
            a.get_long() == Some(flag.as_str()) || (a.is_positional() && a.get_id() == key.as_str())
        }) else {
            let known: Vec<String> = target
                .get_arguments()
                .filter(|a| a.get_id() != "help" && a.get_id() != "version")
                .map(|a| {
                    a.get_long()
                        .map_or_else(|| a.get_id().to_string(), str::to_owned)
                })
                .collect();
            return Err(ConfigError::UnknownKey {
                path: shown,
                key: key.clone(),
                command: name,
                known: known.join(", "),
            });
        };
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<_>>(),
            v => scalar(v).map(|s| vec![s]),
        }
        .ok_or_else(|| ConfigError::Value {
            path: shown.clone(),
            key: key.clone(),
        })?;
        if arg.is_positional() {
            // A positional given on the command line wins; otherwise the file's value.
            if positionals_on_line == 0 {
                positional.extend(values.into_iter().map(OsString::from));
            }
            continue;
        }
        let long = format!("--{flag}");
        let on_line = given
            .iter()
            .any(|g| *g == long || g.starts_with(&format!("{long}=")));
        let in_env = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if on_line || in_env {
            continue;
        }
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values())
            && !matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
        if !takes_value {
            if values.iter().any(|v| v == "true") {
                extra.push(long.into());
            }
            continue;
        }
        for v in values {
            extra.push(long.clone().into());
            extra.push(v.into());
        }
    }
    args.extend(extra);
    args.extend(positional);
    Ok(args)
}

/// How many positional values the command line gives to `target` (the tokens after its
/// name that are neither options nor option values).
fn count_positionals(target: &clap::Command, given: &[String], name: &str) -> usize {
    let sub = name.rsplit(' ').next().unwrap_or(name);
    let start = given.iter().position(|g| g == sub).map_or(1, |i| i + 1);
    let mut count = 0;
    let mut i = start;
    while i < given.len() {
        let g = &given[i];
        if let Some(long) = g.strip_prefix("--") {
            let takes = target
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .is_some_and(|a| {
                    a.get_num_args().is_none_or(|n| n.takes_values())
                        && !matches!(
                            a.get_action(),
                            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                        )
                });
            if takes && !long.contains('=') {
                i += 1;
            }
        } else if g.starts_with('-') && g.len() == 2 {
            let short = g.chars().nth(1);
            let takes = target
                .get_arguments()
                .find(|a| a.get_short() == short)
                .is_some_and(|a| {
                    !matches!(
                        a.get_action(),
                        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                    )
                });
            if takes {
                i += 1;
            }
        } else {
            count += 1;
        }
        i += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Watch {
            channel: String,
            #[arg(long, env = "FJORD_TEST_UPLOAD_X", default_value = "5M")]
            upload: String,
            #[arg(long)]
            bootstrap: Vec<String>,
            #[arg(long)]
            play: bool,
        },
    }

    fn parse(file: &str, line: &[&str]) -> Result<Cmd, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<OsString> = vec!["fjord-node".into(), "watch".into()];
        args.extend(line.iter().map(OsString::from));
        args.push("--config".into());
        args.push(path.into());
        let cmd = <Cli as clap::CommandFactory>::command();
        let args = with_config_file(&cmd, args).map_err(|e| e.to_string())?;
        Cli::try_parse_from(args)
            .map(|c| c.command)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_file_fills_in_and_the_command_line_wins() {
        let file =
            "channel = \"abc\"\nupload = \"10M\"\nbootstrap = [\"/a\", \"/b\"]\nplay = true\n";
        let Cmd::Watch {
            channel,
            upload,
            bootstrap,
            play,
        } = parse(file, &[]).unwrap();
        assert_eq!(
            (channel.as_str(), upload.as_str(), bootstrap.len(), play),
            ("abc", "10M", 2, true)
        );
        let Cmd::Watch {
            channel, upload, ..
        } = parse(file, &["--upload", "1M", "xyz"]).unwrap();
        assert_eq!((channel.as_str(), upload.as_str()), ("xyz", "1M"));
        let Cmd::Watch {
            channel, upload, ..
        } = parse(file, &["--upload", "1M"]).unwrap();
        assert_eq!(
            (channel.as_str(), upload.as_str()),
            ("abc", "1M"),
            "an option value is not the channel"
        );
    }

    #[test]
    fn unknown_keys_and_bad_files_are_clear_errors() {
        let e = parse("uplaod = \"1M\"\n", &["abc"]).unwrap_err();
        assert!(
            e.contains("unknown key \"uplaod\"") && e.contains("upload"),
            "{e}"
        );
        let e = parse("upload = [\n", &["abc"]).unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = parse("upload = { a = 1 }\n", &["abc"]).unwrap_err();
        assert!(e.contains("must be a string"), "{e}");
    }
}
