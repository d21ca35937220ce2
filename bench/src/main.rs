//! The bench binary: parses the command line, runs the figures, prints the table and writes the
//! report. Exits 1 when a measurement failed, 2 on a bad command line.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    camrec_shared::telemetry::init("info,sqlx=warn,async_nats=warn");
    let opts = match bench::Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{}", bench::USAGE);
            std::process::exit(2);
        }
    };
    let outcome = bench::run(&opts).await?;
    println!("{}", bench::report::table(&outcome.rows));
    if let Some(out) = &opts.out {
        // The report's `## History` (measurements of earlier runs, kept by hand) survives a run.
        let previous = std::fs::read_to_string(out).ok();
        let text = bench::report::keep_history(&outcome.markdown, previous.as_deref());
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        println!("written to {}", out.display());
    }
    println!("service logs: {}", opts.log_dir.display());
    if !outcome.measured_everything() {
        eprintln!("some figures could not be measured (ERROR rows)");
        std::process::exit(1);
    }
    Ok(())
}
