//! The `switchyard` binary: the gateway with no filters of its own (see `switchyard::app`).

/// With `--features mimalloc`: mimalloc instead of glibc's malloc: less CPU per request, more
/// memory per open stream, so it is opt-in; BENCHMARKS.md has the measured trade.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    switchyard::Gateway::builder().run()
}
