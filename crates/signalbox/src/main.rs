//! The `signalbox` binary: parses the command line and runs one command.

mod cli;
mod commands;

use clap::Parser;

/// mimalloc rather than the system allocator: the pipeline allocates on one thread and frees
/// on another, which fragments glibc's per-thread arenas into a heap that keeps growing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Everything Signalbox creates (the data folder, its databases, their journals and
    // indexes) is for its own user only: the log holds personal data and the keys' digests.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(
        commands::private::UMASK,
    ));
    let cli = cli::Cli::parse();
    commands::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // What reads the output stopped reading (`| head`): nothing is wrong here.
        Err(err) if commands::is_broken_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
