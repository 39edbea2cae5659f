//! The `swarmgate` binary: everything lives in the library; see `swarmgate --help`.

/// jemalloc, because glibc's allocator kept the fragments of a load spike
/// resident for the life of the process: after the same churn, idle RSS went
/// 10.5, 13.2, 13.4, 17.7 MiB with glibc and stayed at 10.8 to 11.9 MiB with
/// jemalloc (BENCHMARKS.md, soak), at the same CPU per announce.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread purges pages
/// unused for 5 s with `MADV_DONTNEED` (muzzy decay 0, since pages released
/// with `MADV_FREE` still count in RSS until the kernel runs short).
#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    swarmgate::cli::main()
}
