//! Running a plan: each command in order, its guard checked first, its
//! stdin fed when it has one, stopping at the first failure.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::{Guard, InitError, IptablesCommand};

/// Runs `commands` in order with [`std::process::Command`], stopping at the
/// first failure.
pub fn apply(commands: &[IptablesCommand]) -> Result<(), InitError> {
    apply_with(commands, |program, args, stdin| {
        let Some(input) = stdin else {
            return Command::new(program).args(args).output();
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })
}

/// [`apply`] with an injectable runner `(program, args, stdin)` (tests use
/// a fake one). Guard checks never get stdin.
pub fn apply_with(
    commands: &[IptablesCommand],
    mut run: impl FnMut(&str, &[String], Option<&str>) -> std::io::Result<Output>,
) -> Result<(), InitError> {
    let mut exec = |command: &IptablesCommand, args: &[String], stdin: Option<&str>| {
        run(&command.program, args, stdin).map_err(|source| InitError::Spawn {
            command: command.line(args),
            source,
        })
    };
    for command in commands {
        let wanted = match &command.guard {
            Guard::Always => true,
            Guard::IfOk(check) => exec(command, check, None)?.status.success(),
            Guard::UnlessOk(check) => !exec(command, check, None)?.status.success(),
            Guard::IfPrints(check) => prints(&exec(command, check, None)?),
            Guard::UnlessPrints(check) => !prints(&exec(command, check, None)?),
        };
        if !wanted {
            continue;
        }
        let output = exec(command, &command.args, command.stdin.as_deref())?;
        if !output.status.success() {
            return Err(InitError::Failed {
                command: command.line(&command.args),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Whether a check succeeded and printed something.
fn prints(output: &Output) -> bool {
    output.status.success() && !output.stdout.iter().all(u8::is_ascii_whitespace)
}
