//! The `bundle` command-line tool: a thin layer over the `ternary_bundle` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
