//! Exit codes, and how an error is reported on stderr.

use std::process::ExitCode;

/// The server refused or failed the call (a gRPC status).
pub const REFUSED: u8 = 1;
/// Bad arguments, and every other failure on this side (e.g. an unreadable `--ca-cert`, an unwritable
/// `--image-out`). clap exits with 2 on bad usage too.
pub const BAD_ARGS: u8 = 2;
/// The server cannot be reached.
pub const UNREACHABLE: u8 = 3;

/// The review API cannot be reached; the message says where and why.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// The server refused a call whose message says what to do already (no hint added).
#[derive(Debug)]
pub struct Refused(pub tonic::Status);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for Refused {}

/// Prints the error of a run (with a hint for the usual gRPC refusals) and returns the exit code.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        let hint = match status.code() {
            tonic::Code::Unauthenticated => {
                " (pass --token or set TIERLINE_REVIEW_TOKEN to your reviewer token)"
            }
            tonic::Code::PermissionDenied => {
                " (drop --reviewer: the server records the owner of the token)"
            }
            tonic::Code::NotFound => " (list frames with: tierline-review list)",
            _ => "",
        };
        eprintln!("error: {:?}: {}{hint}", status.code(), status.message());
        ExitCode::from(REFUSED)
    } else if let Some(refused) = e.downcast_ref::<Refused>() {
        eprintln!("error: {refused}");
        ExitCode::from(REFUSED)
    } else if e.downcast_ref::<Unreachable>().is_some() {
        eprintln!("error: {e:#}");
        ExitCode::from(UNREACHABLE)
    } else {
        eprintln!("error: {e:#}");
        ExitCode::from(BAD_ARGS)
    }
}
