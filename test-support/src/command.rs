//! Running a command from a test: the output is wanted, and a failure ends the test with the
//! command's own explanation (its stderr) rather than an error the test would have to thread.

use std::process::Command;

/// Runs `args[0]` with the rest as arguments and returns its stdout.
///
/// Panics (this is a test helper) when the command cannot be started or exits unsuccessfully,
/// with the command line and its stderr in the message.
pub fn sh(args: &[&str]) -> String {
    let (program, rest) = args.split_first().expect("sh: no command given");
    let out = Command::new(program)
        .args(rest)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_stdout() {
        assert_eq!(sh(&["printf", "a b\\n"]), "a b\n");
    }

    #[test]
    #[should_panic(expected = "no such thing")]
    fn a_failure_panics_with_stderr() {
        sh(&["sh", "-c", "echo no such thing >&2; exit 3"]);
    }

    #[test]
    #[should_panic(expected = "definitely-not-a-command")]
    fn a_missing_program_panics_with_its_name() {
        sh(&["definitely-not-a-command"]);
    }
}
