//! `docs/configuration.md`: every command, option and environment variable
//! of `jetsaga` and of any saga's own binary (the runner library's verbs),
//! generated from the command lines themselves, so the reference cannot
//! drift from `--help`. `JETSAGA_BLESS=1 cargo test -p jetsaga-local --test
//! configuration` rewrites it.

use std::path::Path;

use clap::CommandFactory;

/// A saga binary with no options of its own: the verbs every saga gets.
#[derive(Debug, clap::Args)]
struct NoOptions {}

/// `--help` as text, without the values the environment happens to hold
/// (`[env: DATABASE_URL=postgres://…]` becomes `[env: DATABASE_URL]`).
fn help(command: &mut clap::Command) -> String {
    let text = command.render_long_help().to_string();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("[env: ") {
        out.push_str(&rest[..at + 6]);
        rest = &rest[at + 6..];
        let end = rest.find(']').unwrap_or(rest.len());
        let name = rest[..end].split('=').next().unwrap_or_default();
        out.push_str(name);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim_end().to_string()
}

fn section(out: &mut String, command: &mut clap::Command, path: &str, depth: usize) {
    out.push_str(&format!("{} `{path}`\n\n```text\n{}\n```\n\n", "#".repeat(depth.min(6)), help(command)));
    let names: Vec<String> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let sub = command.find_subcommand_mut(&name).expect("listed just now");
        section(out, sub, &format!("{path} {name}"), depth + 1);
    }
}

fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the command lines (`local/tests/configuration.rs`); do not edit. Every option with an\n\
         `[env: NAME]` may be set by that environment variable instead, which is how containers, Kubernetes\n\
         and Lambda configure it.\n\n\
         - [`jetsaga`](#jetsaga): the shop's CLI and local runner.\n\
         - [`<saga>`](#saga): the verbs any saga's own binary gets from the runner library (`jetsaga-runner`),\n  \
           such as `travel` in `examples/travel`; a saga adds its own options (the trip's `--deadline`).\n\n",
    );
    let mut jetsaga = jetsaga_local::cli::Cli::command().bin_name("jetsaga").term_width(100);
    jetsaga.build();
    section(&mut out, &mut jetsaga, "jetsaga", 2);
    let mut saga = jetsaga_runner::cli::Cli::<NoOptions>::command()
        .name("saga")
        .bin_name("<saga>")
        .about("A saga's own binary: the runner library's verbs")
        .term_width(100);
    saga.build();
    section(&mut out, &mut saga, "<saga>", 2);
    out.trim_end().to_string() + "\n"
}

#[test]
fn the_configuration_reference_is_what_the_command_lines_say() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let generated = reference();
    if std::env::var("JETSAGA_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        existing == generated,
        "docs/configuration.md is out of date: JETSAGA_BLESS=1 cargo test -p jetsaga-local --test configuration"
    );
}
