//! The `bundle` command-line tool: a thin layer over the `ternary_bundle` library.

fn main() {
    println!(
        "bundle {}: the command-line interface arrives with the CLI issue; see README.md",
        env!("CARGO_PKG_VERSION")
    );
}
