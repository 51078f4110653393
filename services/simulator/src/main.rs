//! app-simulator: parse the flags, run a load or a canary, report, exit 0
//! only if every answer was the one intended.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = app_simulator::Args::parse();
    let stop = ticketmesh_runtime::shutdown::signal();
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {e}"))?;
        let ready = ticketmesh_runtime::admin::Readiness::default();
        ready.set(true);
        // Ends with the process: it has nothing to flush.
        tokio::spawn(ticketmesh_runtime::admin::serve(
            listener,
            ticketmesh_runtime::admin::router(ready),
            std::future::pending(),
        ));
    }
    if args.canary {
        let failures = app_simulator::canary(&args, stop).await?;
        // With --count the exit status is the verdict; a canary that runs
        // until stopped reports through its output and metrics, and a stop
        // is not a failure.
        let failed = args.count.is_some() && failures > 0;
        return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    // A progress line every second on a terminal, every 5 s in a log.
    let progress = Duration::from_secs(if std::io::stderr().is_terminal() { 1 } else { 5 });
    let report = app_simulator::load(&args, stop, Some(progress)).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.unexpected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
