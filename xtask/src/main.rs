//! `cargo xtask`: project tasks. Dispatches to one module per command; each command parses
//! its own options with clap (`xtask::args`).

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

  cluster N nodes (engine + worker each) on one PostgreSQL run a deep scan of 16 lab hosts
          posted to the HTTP API, optionally killing one node (cargo xtask cluster --help)
  bench   Portscope vs masscan, zmap and nmap on the same lab scenarios (cargo xtask bench --help)
  demo    build, bring the lab up, deep-scan a lab host, check it against ground truth
  lab     the network lab: up, down, status, impair, exec (cargo xtask lab help)
  pg      run a command beside a throwaway PostgreSQL (PORTSCOPE_TEST_PG): cargo xtask pg -- cargo test
  soak    the service under an hour of mixed clients compressed into minutes, in the lab";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("lab") => xtask::lab::cli::run(&args[1..]),
        Some("demo") => xtask::demo::run(&args[1..]),
        Some("bench") => xtask::bench::run(&args[1..]),
        Some("cluster") => xtask::cluster::run(&args[1..]),
        Some("soak") => xtask::soak::run(&args[1..]),
        Some("pg") => xtask::pg::with_server(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(0)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(2)
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
