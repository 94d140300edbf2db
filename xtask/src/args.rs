//! Command-line parsing shared by every xtask command: each command declares its options
//! with clap's derive and parses the arguments after its name here.

/// Parses `args` (what follows `cargo xtask <command>`) as `T`. On `--help` clap prints the
/// help and exits 0; on a bad flag or value it prints a clear message and exits 2.
pub fn parse<T: clap::Parser>(command: &str, args: &[String]) -> T {
    try_parse(command, args).unwrap_or_else(|e| e.exit())
}

/// Like [`parse`], but returns clap's error (for tests).
pub fn try_parse<T: clap::Parser>(command: &str, args: &[String]) -> Result<T, clap::Error> {
    let bin = format!("cargo xtask {command}");
    T::try_parse_from(std::iter::once(bin).chain(args.iter().cloned()))
}
