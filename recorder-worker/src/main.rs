//! The `recorder-worker` binary: configuration from the environment, logging, signals, then
//! [`recorder_worker::run`].

fn main() -> anyhow::Result<()> {
    keep_big_buffers_off_the_heap();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    camrec_shared::telemetry::init("info");
    let config = recorder_worker::Config::from_env()?;
    let shutdown = camrec_shared::shutdown::on_signal();
    recorder_worker::run(config, shutdown).await?;
    Ok(())
}

/// glibc's malloc raises its mmap threshold each time a large mmapped block is freed, so after
/// the first clip the upload's 8 MiB part buffers come from the heap and stay there once freed:
/// the bench's P5 saw the worker's own memory triple after a few clips. A fixed threshold keeps
/// every block of 256 KiB or more mmapped, given back to the system when it is freed.
fn keep_big_buffers_off_the_heap() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt(3) only sets one of malloc's tunables; it is called before the runtime
    // starts any thread, and it takes no pointer.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
