//! `vigil completions SHELL` and `vigil man --out DIR`: shell completions
//! and man pages generated from the command line's own definition
//! (`clap_complete`, `clap_mangen`), so that they never drift from it. The
//! Debian package ships both (`scripts/build-deb.sh`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;

use crate::Failure;

/// Arguments of `vigil completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Arguments of `vigil man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (vigil.1, vigil-sensor.1, ...;
    /// made if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Prints the completion script for `a.shell` on standard output.
pub fn completions(a: &CompletionsArgs, mut cmd: clap::Command) -> Result<(), Failure> {
    // Into memory first: the generator panics on a write error (a closed
    // pipe), which the caller treats as success.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "vigil", &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
    Ok(())
}

/// Writes a man page for `vigil` and one for every subcommand.
pub fn man(a: &ManArgs, cmd: clap::Command) -> Result<(), Failure> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating {}", a.out.display()))
        .map_err(Failure::usage)?;
    clap_mangen::generate_to(cmd, &a.out)
        .with_context(|| format!("writing man pages into {}", a.out.display()))?;
    Ok(())
}
