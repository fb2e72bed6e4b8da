//! The `wanda-ipfs` binary: parse flags, set up logging, run, map errors to
//! an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match wanda_ipfs::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `wanda-ipfs cat CID | head` closes our stdout early: that is
            // the reader's choice, not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
