//! The `plateqc` binary: parses the command line and hands over to the library.

// glibc hands every multi-megabyte plate buffer back to the kernel and faults it in again for
// the next plate; mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plateqc::cli::main()
}
