//! The `bundle` command: parses arguments ([`args`]), runs a command ([`commands`]), prints
//! ([`render`], [`print`]).

pub mod args;
mod commands;
pub mod print;
mod render;

use std::process::ExitCode;

use clap::Parser;
use ternary_bundle::read::inspect::inspect;
use ternary_bundle::read::mmap::Backing;
use ternary_bundle::{Bundle, OpenOptions};

use args::{Cli, Command};

/// Runs the command line; returns the process exit code (0 success, 1 failure; clap exits
/// with 2 on usage errors).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Fails only if a pool was already built, which nothing does before this point.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global();
    }
    let open = OpenOptions {
        backing: if cli.no_mmap {
            Backing::Read
        } else {
            Backing::Map
        },
    };
    // `assess` reports bad option values as usage errors (exit 2), as its help says.
    let assess = matches!(cli.command, Command::Assess(_));
    let outcome = match cli.command {
        Command::Create(a) => commands::create(a, &open),
        Command::Demo(a) => commands::demo(&a.dir, a.seed, a.model, &open),
        Command::Inspect(a) => Bundle::open_with(&a.dir, &open).map(|b| {
            let i = inspect(&b);
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&i).expect("inspection serializes")
                );
            } else {
                render::inspection(&i, a.tensors);
            }
            true
        }),
        Command::Verify(a) => commands::verify_cmd(a, open),
        Command::Export(a) => commands::export_cmd(a, &open),
        Command::Requantize(a) => commands::requantize_cmd(a, &open),
        Command::Assess(a) => commands::assess_cmd(a, open),
        Command::Report(a) => commands::report_cmd(a, open),
        Command::Run(a) => commands::run_cmd(a, &open),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            // Missing labelled data is a usage problem: exit 2, as clap does.
            let usage = matches!(e, ternary_bundle::Error::MissingData(_))
                || assess && matches!(e, ternary_bundle::Error::InvalidArgument(_));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
