//! The `swarmgate` binary: everything lives in the library; see `swarmgate --help`.

fn main() -> std::process::ExitCode {
    swarmgate::cli::main()
}
