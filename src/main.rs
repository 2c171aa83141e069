//! The `plateqc` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    plateqc::cli::main()
}
