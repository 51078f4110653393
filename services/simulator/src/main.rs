//! app-simulator: parse the flags, run a load or a canary, report, exit 0
//! only if every answer was the one intended.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = app_simulator::Args::parse();
    let stop = ticketmesh_runtime::shutdown::signal();
    if args.canary {
        let failures = app_simulator::canary(&args, stop).await?;
        return Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
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
