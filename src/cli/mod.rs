//! The `bundle` command: parses arguments ([`args`]), runs a command ([`commands`]), prints
//! ([`render`], [`print`]).

/// `println!` that ends the program quietly (exit 0) when standard output is closed: `bundle
/// inspect DIR | head` stops reading, which is not an error of the bundle (`println!` would
/// panic with "Broken pipe"). Any other write error is reported and exits with 1.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

/// `print!` with the closed-pipe handling of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

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
                outln!(
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
        Command::Sign(a) => commands::sign_cmd(a),
        Command::Keygen(a) => commands::keygen_cmd(a),
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

/// What a failed write to standard output does: a closed pipe ends the program quietly (exit
/// 0: the reader has what it wanted); anything else is an error (exit 1).
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(1);
}
