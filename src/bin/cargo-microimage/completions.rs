//! Shell completion scripts for what users type: `cargo microimage …` (and the binary
//! called directly, `cargo-microimage …`).
//!
//! clap_complete generates the completion of our own command line; what it cannot know is
//! that users reach it through `cargo`, whose completion belongs to cargo. So each script
//! hooks into cargo's without replacing it:
//! - bash: a function for `cargo` that completes `cargo microimage …` itself and hands every
//!   other `cargo …` to the completion that was registered for cargo before (rustup's
//!   `cargo` completion, or bash-completion's, loaded on demand);
//! - zsh: cargo's own zsh completion calls `_cargo-<subcommand>` for external subcommands,
//!   so the script defines `_cargo-microimage` (and registers it for `cargo-microimage`);
//! - fish: completions add up, so the script adds conditions on `cargo microimage` to
//!   cargo's own.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell};

/// The completion script for `shell`.
pub fn script(shell: CompletionShell) -> String {
    match shell {
        CompletionShell::Bash => bash(),
        CompletionShell::Zsh => generated(
            clap_complete::Shell::Zsh,
            Cli::command(),
            "cargo-microimage",
        ),
        CompletionShell::Fish => fish(),
    }
}

fn generated(shell: clap_complete::Shell, mut cmd: clap::Command, bin: &str) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    String::from_utf8(out).expect("completion scripts are UTF-8")
}

/// clap_complete's function for our command line, registered for `cargo-microimage` and
/// hooked into cargo's completion. It is generated under a name without `-`: for a name
/// with one, clap_complete 4.6 spells the subcommand cases two ways and completes nothing
/// after the subcommand. Its own `complete` line (for that name) is replaced by ours.
fn bash() -> String {
    let generated = generated(
        clap_complete::Shell::Bash,
        Cli::command(),
        "cargo_microimage",
    );
    let function = match generated.find("\nif [[ \"${BASH_VERSINFO[0]}\" -eq 4") {
        Some(end) => &generated[..=end],
        None => &generated,
    };
    format!("{function}{BASH_REGISTRATION}")
}

/// `complete -c cargo …` lines for `cargo microimage …`, from a stand-in `cargo` command
/// with one subcommand. The stand-in's own help flag and `help` subcommand are left out, and
/// the helper functions get names of their own, so nothing of cargo's completion changes.
fn fish() -> String {
    let cargo = clap::Command::new("cargo")
        .disable_help_flag(true)
        .disable_help_subcommand(true)
        .disable_version_flag(true)
        .subcommand(Cli::command().name("microimage"));
    generated(clap_complete::Shell::Fish, cargo, "cargo")
        .replace("__fish_cargo_", "__fish_cargo_microimage_")
}

const BASH_REGISTRATION: &str = r#"
complete -F _cargo_microimage -o bashdefault -o default cargo-microimage

# `cargo microimage …`: complete it here, hand any other `cargo …` to cargo's completion.
__cargo_microimage_previous=
if ! complete -p cargo >/dev/null 2>&1 && declare -F _completion_loader >/dev/null 2>&1; then
    _completion_loader cargo >/dev/null 2>&1
fi
if [[ "$(complete -p cargo 2>/dev/null)" =~ -F\ ([^ ]+) ]] \
   && [[ "${BASH_REMATCH[1]}" != _cargo_microimage_hook ]]; then
    __cargo_microimage_previous="${BASH_REMATCH[1]}"
fi
_cargo_microimage_hook() {
    if [[ ${COMP_CWORD} -ge 2 && "${COMP_WORDS[1]}" == microimage ]]; then
        local COMP_WORDS=("cargo-microimage" "${COMP_WORDS[@]:2}")
        local COMP_CWORD=$((COMP_CWORD - 1))
        _cargo_microimage cargo-microimage "$2" "$3"
    elif [[ -n "${__cargo_microimage_previous}" ]]; then
        "${__cargo_microimage_previous}" "$@"
    fi
}
complete -F _cargo_microimage_hook -o bashdefault -o default cargo
"#;
