//! `--config FILE`: a TOML file whose keys are a binary's long flags in snake_case
//! (`--max-ttl-ms` is `max_ttl_ms`), read at start.
//!
//! Precedence: the command line, then the environment, then the file, then the defaults.
//! The flags are the one list of keys: [`parse`] asks clap which values came from the
//! command line or the environment ([`clap::ArgMatches::value_source`]), turns each file
//! key that did not into `--flag=value`, and parses again. So a new flag is a new key with
//! no code here, each value is checked by the flag's own parser, and a key the flags do not
//! have is an error rather than silently ignored.
//!
//! Types: a flag that takes a value takes a TOML string or integer (checked by the flag's
//! parser: `max_ttl_ms = "soon"` is refused); a switch (`--no-fdatasync`) takes `true` or
//! `false`. An unreadable file, invalid TOML, an unknown key, a wrong type or a bad value
//! stops the binary with an error naming the file and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

/// The id of the flag that names the config file (`--config`), in every binary using this.
pub const CONFIG_KEY: &str = "config";

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with the line and column).
        message: String,
    },
    /// A key that is no flag of this binary.
    #[error("the config file {path} has an unknown key `{key}` (the keys are: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The keys this binary has, comma-separated.
        known: String,
    },
    /// A value of the wrong TOML type for its key.
    #[error("the config file {path}: `{key}` must be {expected}, not {found}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the key takes.
        expected: &'static str,
        /// The TOML type found.
        found: &'static str,
    },
    /// A value its flag's parser refuses.
    #[error("the config file {path}: `{key}` = {value}: {reason}")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What the flag's parser said.
        reason: String,
    },
}

/// Parses the process's command line as `C::parse` does, with the file named by
/// `--config` (or its environment variable) folded in below the command line and the
/// environment. On an error it prints it and exits with status 2, as clap does for a bad
/// flag.
pub fn parse<C: CommandFactory + FromArgMatches>() -> C {
    match try_parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(ParseError::Flags(error)) => error.exit(),
        Err(ParseError::File(error)) => {
            let name = C::command().get_name().to_string();
            eprintln!("{name}: {error}");
            std::process::exit(2);
        }
    }
}

/// Why [`try_parse_from`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The command line (or `--help` / `--version`, which clap reports as errors).
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// The config file.
    #[error(transparent)]
    File(#[from] ConfigFileError),
}

/// Parses `args` (the first is the program's name) into `C`, with the config file folded
/// in; see the module's documentation.
pub fn try_parse_from<C, I, T>(args: I) -> Result<C, ParseError>
where
    C: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = C::command();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = command.clone().try_get_matches_from(&args)?;
    let Some(path) = config_path(&command, &matches) else {
        return Ok(C::from_arg_matches(&matches)?);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let from_file = flags_from_file(&command, &matches, &path, &text)?;
    let mut merged = Vec::with_capacity(args.len() + from_file.len());
    merged.extend(args.first().cloned());
    merged.extend(from_file);
    merged.extend(args.into_iter().skip(1));
    let matches = command.try_get_matches_from(merged)?;
    Ok(C::from_arg_matches(&matches)?)
}

/// The config file's path, if the command has a `--config` flag and it was given.
fn config_path(command: &Command, matches: &ArgMatches) -> Option<PathBuf> {
    command
        .get_arguments()
        .any(|arg| arg.get_id() == CONFIG_KEY)
        .then(|| matches.get_one::<PathBuf>(CONFIG_KEY).cloned())
        .flatten()
}

/// The flags a config file can set: every flag but `--config`, `--help` and `--version`.
pub fn keys(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_id() != CONFIG_KEY
            && !arg.is_positional()
            && !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// Checks that every key is its flag's long name in snake_case (`--max-ttl-ms` is
/// `max_ttl_ms`): what the documentation promises. A binary's unit test calls this.
pub fn check_keys(command: &Command) -> Result<(), String> {
    for arg in keys(command) {
        let id = arg.get_id().as_str();
        match arg.get_long() {
            Some(long) if long.replace('-', "_") == id => {}
            long => {
                return Err(format!(
                    "the flag with id `{id}` has the long name {long:?}: the key a config \
                     file uses must be the long name in snake_case"
                ))
            }
        }
    }
    Ok(())
}

/// Turns the file's keys into `--flag=value` arguments, leaving out those the command line
/// or the environment already set.
fn flags_from_file(
    command: &Command,
    matches: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigFileError> {
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigFileError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
    let mut flags = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let Some(arg) = keys(command).find(|arg| arg.get_id() == key.as_str()) else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                known: keys(command)
                    .map(|arg| arg.get_id().as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let overridden = matches!(
            matches.value_source(key),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        );
        let flag = flag_for(arg, path, key, value)?;
        if !overridden {
            flags.extend(flag);
        }
    }
    Ok(flags)
}

/// The argument that sets `arg` to `value` (none for a switch set to `false`), checked by
/// the flag's own parser.
fn flag_for(
    arg: &Arg,
    path: &Path,
    key: &str,
    value: &toml::Value,
) -> Result<Option<OsString>, ConfigFileError> {
    let long = arg.get_long().unwrap_or(key);
    let wrong_type = |expected| ConfigFileError::WrongType {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected,
        found: value.type_str(),
    };
    if !arg.get_action().takes_values() {
        return match value {
            toml::Value::Boolean(true) => Ok(Some(format!("--{long}").into())),
            toml::Value::Boolean(false) => Ok(None),
            _ => Err(wrong_type("true or false")),
        };
    }
    let text = value_text(value).ok_or_else(|| wrong_type("a string or an integer"))?;
    // The flag's parser, run in a command of its own: the whole command would also check
    // relations between flags (`requires`), which are for the final parse to report.
    let alone = Arg::new(arg.get_id().clone())
        .action(ArgAction::Set)
        .allow_hyphen_values(true)
        .value_parser(arg.get_value_parser().clone());
    Command::new(CONFIG_KEY)
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([text.as_str()])
        .map_err(|e| ConfigFileError::InvalidValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            reason: clap_reason(&e),
        })?;
    Ok(Some(format!("--{long}={text}").into()))
}

/// A value as its flag would be written on the command line, if its type can be one.
fn value_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The reason in a clap error, without its "error:" prefix and usage hint.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Everything a binary's unit test checks of its flags and its example config file
/// (`name`, for messages): clap's own consistency, [`check_keys`] and [`check_example`].
pub fn check_binary(command: &Command, name: &str, example: &str) -> Result<(), String> {
    command.clone().debug_assert();
    check_keys(command)?;
    check_example(command, example).map_err(|e| format!("{name}: {e}"))
}

/// Checks an example config file (`packaging/fenced.toml`) against the flags: every key
/// appears exactly once, as a commented `# key = value` line; each value is valid for its
/// flag; and for a flag with a default, the value shown is that default. A binary's unit
/// test calls this, so the example cannot drift from the flags.
pub fn check_example(command: &Command, example: &str) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    let path = Path::new("the example");
    for line in example.lines() {
        let Some(setting) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((key, value)) = setting.split_once(" = ") else {
            continue;
        };
        let Some(arg) = keys(command).find(|arg| arg.get_id() == key) else {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return Err(format!("`{key}` is no flag"));
            }
            continue;
        };
        if seen.iter().any(|k| k == key) {
            return Err(format!("`{key}` appears twice"));
        }
        seen.push(key.to_string());
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
            .ok_or_else(|| format!("`{key}`: `{value}` is not a TOML value"))?;
        flag_for(arg, path, key, &value).map_err(|e| e.to_string())?;
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        let shown = match &value {
            toml::Value::Boolean(b) => Some(b.to_string()),
            other => value_text(other),
        };
        if let [default] = default.as_slice() {
            if shown.as_deref() != Some(default) {
                return Err(format!(
                    "`{key}` shows {value}, but its default is {default}"
                ));
            }
        }
    }
    for arg in keys(command) {
        let key = arg.get_id().as_str();
        if !seen.iter().any(|k| k == key) {
            return Err(format!("`{key}` is missing (as a `# {key} = ...` line)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;

    use clap::Parser;

    use super::*;

    /// A binary's flags, as the real ones are written.
    #[derive(Debug, Parser, PartialEq)]
    #[command(name = "example")]
    struct Args {
        /// The config file.
        #[arg(long, env = "EXAMPLE_TEST_CONFIG")]
        config: Option<PathBuf>,
        /// Where to listen.
        #[arg(long, env = "EXAMPLE_TEST_LISTEN", default_value = "127.0.0.1:7500")]
        listen: SocketAddr,
        /// A number.
        #[arg(long, env = "EXAMPLE_TEST_MAX_TTL_MS", default_value_t = 1000)]
        max_ttl_ms: u64,
        /// A number only the environment test sets through the environment.
        #[arg(long, env = "EXAMPLE_TEST_MIN_TTL_MS", default_value_t = 10)]
        min_ttl_ms: u64,
        /// An optional one.
        #[arg(long)]
        session_listen: Option<SocketAddr>,
        /// A switch.
        #[arg(long)]
        no_fdatasync: bool,
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn parse_with(path: &Path, flags: &[&str]) -> Result<Args, ParseError> {
        let mut args = vec![
            "example".to_string(),
            format!("--config={}", path.display()),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
        try_parse_from::<Args, _, _>(args)
    }

    // checks: none (operations)
    #[test]
    fn the_file_sets_what_the_command_line_does_not_and_defaults_fill_the_rest() {
        let (_dir, path) = file(
            "listen = \"0.0.0.0:9000\"\nsession_listen = \"127.0.0.1:9001\"\n\
             no_fdatasync = true\n",
        );
        let args = parse_with(&path, &[]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(args.session_listen, Some("127.0.0.1:9001".parse().unwrap()));
        assert!(args.no_fdatasync);
        assert_eq!(
            args.max_ttl_ms, 1000,
            "a key the file leaves out keeps its default"
        );

        let (_dir, path) = file("max_ttl_ms = 5000\nno_fdatasync = false\n");
        let args = parse_with(&path, &["--max-ttl-ms", "7000"]).unwrap();
        assert_eq!(args.max_ttl_ms, 7000, "the command line wins over the file");
        assert!(!args.no_fdatasync);
    }

    // checks: none (operations)
    #[test]
    fn the_environment_wins_over_the_file() {
        // The only test that sets this variable, and the only one that reads its flag.
        std::env::set_var("EXAMPLE_TEST_MIN_TTL_MS", "90");
        let (_dir, path) = file("min_ttl_ms = 50\n");
        let parsed = parse_with(&path, &[]);
        let on_the_line = parse_with(&path, &["--min-ttl-ms", "70"]);
        std::env::remove_var("EXAMPLE_TEST_MIN_TTL_MS");
        assert_eq!(parsed.unwrap().min_ttl_ms, 90);
        assert_eq!(
            on_the_line.unwrap().min_ttl_ms,
            70,
            "and the command line over both"
        );
    }

    // checks: none (operations)
    #[test]
    fn bad_files_are_errors_that_name_the_file_and_the_key() {
        let expect_error = |text: &str, words: &[&str]| {
            let (_dir, path) = file(text);
            let error = match parse_with(&path, &[]) {
                Err(ParseError::File(error)) => error.to_string(),
                other => panic!("{text:?}: {other:?}"),
            };
            assert!(error.contains(&path.display().to_string()), "{error}");
            for word in words {
                assert!(error.contains(word), "{text:?}: {error} lacks {word}");
            }
        };
        expect_error("max_ttl = 5\n", &["unknown key `max_ttl`", "max_ttl_ms"]);
        expect_error("config = \"other.toml\"\n", &["unknown key `config`"]);
        expect_error("max_ttl_ms = \"soon\"\n", &["`max_ttl_ms`", "soon"]);
        expect_error("max_ttl_ms = -5\n", &["`max_ttl_ms`", "-5"]);
        expect_error(
            "max_ttl_ms = true\n",
            &["`max_ttl_ms`", "string or an integer"],
        );
        expect_error("listen = \"nowhere\"\n", &["`listen`", "nowhere"]);
        expect_error(
            "no_fdatasync = \"yes\"\n",
            &["`no_fdatasync`", "true or false"],
        );
        expect_error("listen = [1]\n", &["`listen`", "array"]);
        expect_error("listen = \n", &["not valid TOML"]);
        // A bad key is an error even when the command line overrides it.
        let (_dir, path) = file("max_ttl_ms = \"soon\"\n");
        assert!(parse_with(&path, &["--max-ttl-ms", "1"]).is_err());

        let missing = Path::new("/nonexistent/example.toml");
        match parse_with(missing, &[]) {
            Err(ParseError::File(error @ ConfigFileError::Read { .. })) => {
                assert!(
                    error.to_string().contains("/nonexistent/example.toml"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    // checks: none (operations)
    #[test]
    fn without_a_file_it_parses_as_clap_does() {
        let args = try_parse_from::<Args, _, _>(["example", "--max-ttl-ms", "3"]).unwrap();
        assert_eq!(
            args,
            Args::try_parse_from(["example", "--max-ttl-ms", "3"]).unwrap()
        );
    }

    // checks: none (operations)
    #[test]
    fn keys_are_long_flags_and_an_example_must_list_each_with_its_default() {
        let command = Args::command();
        check_keys(&command).unwrap();
        let good = "# listen = \"127.0.0.1:7500\"\n# max_ttl_ms = 1000\n# min_ttl_ms = 10\n\
                    # session_listen = \"127.0.0.1:7501\"\n# no_fdatasync = false\n";
        check_example(&command, good).unwrap();
        let missing = good.replace("# session_listen = \"127.0.0.1:7501\"\n", "");
        assert!(check_example(&command, &missing)
            .unwrap_err()
            .contains("session_listen"));
        let wrong_default = good.replace("1000", "2000");
        assert!(check_example(&command, &wrong_default)
            .unwrap_err()
            .contains("max_ttl_ms"));
        let unknown = format!("{good}# max_ttl = 5\n");
        assert!(check_example(&command, &unknown)
            .unwrap_err()
            .contains("max_ttl"));
    }
}
