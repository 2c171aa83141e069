//! `plateqc outbox` and `check-config --probe`: what an operator needs to see and fix
//! forwarding without writing SQL.

use super::args::{Format, OutboxAction, OutboxSelectArgs};
use crate::config::Config;
use crate::record::outbox::{OutboxRow, OutboxSelect, OutboxState};
use crate::record::Recorder;
use crate::report::text::{csv_field, printable};
use anyhow::Result;
use std::fmt::Write as _;
use std::process::ExitCode;

/// Runs one `plateqc outbox` action on an open history.
pub(super) async fn run(rec: &Recorder, action: &OutboxAction) -> Result<ExitCode> {
    match action {
        OutboxAction::List {
            state,
            destination,
            limit,
            format,
            ..
        } => {
            let states = parse_states(state)?;
            let rows = rec
                .outbox_list(&states, destination.as_deref(), *limit)
                .await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Csv => print!("{}", to_csv(&rows)),
                Format::Table => print!("{}", to_table(&rows, &rec.outbox_backlog().await?)),
            }
            Ok(ExitCode::SUCCESS)
        }
        OutboxAction::Retry { select, .. } => {
            let n = rec.outbox_retry(&selection(select)).await?;
            println!("{n} outbox entries requeued for an attempt now");
            Ok(if n == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        OutboxAction::Drop { select, .. } => {
            let n = rec.outbox_drop(&selection(select)).await?;
            println!("{n} outbox entries dropped (they will not be sent)");
            Ok(if n == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn parse_states(s: &str) -> Result<Vec<OutboxState>> {
    Ok(match s {
        "waiting" => vec![OutboxState::Pending, OutboxState::Failed],
        "all" => Vec::new(),
        other => vec![other.parse().map_err(|_| {
            anyhow::anyhow!("--state {other}: expected pending, failed, sent, waiting or all")
        })?],
    })
}

fn selection(a: &OutboxSelectArgs) -> OutboxSelect {
    if let Some(name) = &a.destination {
        OutboxSelect::Destination {
            name: name.clone(),
            failed_only: false,
        }
    } else if a.failed {
        OutboxSelect::AllFailed
    } else {
        OutboxSelect::Ids(a.ids.clone())
    }
}

fn to_table(rows: &[OutboxRow], backlog: &[(String, OutboxState, i64)]) -> String {
    let mut s = String::new();
    if backlog.is_empty() {
        s.push_str("nothing waiting in this node's outbox\n");
    }
    for (dest, state, n) in backlog {
        let _ = writeln!(s, "{dest}: {n} {}", state.as_str());
    }
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n{:>6}  {:<12} {:<5} {:<8} {:>8}  {:<24} {:<7} last error",
        "id", "destination", "kind", "state", "attempts", "next attempt", "status"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:>6}  {:<12} {:<5} {:<8} {:>8}  {:<24} {:<7} {}",
            r.id,
            printable(&r.destination),
            r.kind,
            r.state,
            r.attempts,
            if r.state == OutboxState::Sent.as_str() {
                "-"
            } else {
                &r.next_attempt_at
            },
            r.last_status.as_deref().unwrap_or("-"),
            printable(r.last_error.as_deref().unwrap_or(""))
        );
    }
    s
}

fn to_csv(rows: &[OutboxRow]) -> String {
    let mut s = String::from(
        "id,node,destination,kind,sop_instance_uid,state,attempts,next_attempt_at,last_status,\
         last_error,created_at,sent_at\n",
    );
    for r in rows {
        let cells = [
            r.id.to_string(),
            csv_field(&r.node),
            csv_field(&r.destination),
            r.kind.clone(),
            csv_field(&r.sop_instance_uid),
            r.state.clone(),
            r.attempts.to_string(),
            r.next_attempt_at.clone(),
            r.last_status.clone().unwrap_or_default(),
            csv_field(r.last_error.as_deref().unwrap_or("")),
            r.created_at.clone(),
            r.sent_at.clone().unwrap_or_default(),
        ];
        let _ = writeln!(s, "{}", cells.join(","));
    }
    s
}

/// `check-config --probe`: one C-ECHO per destination, as forwarding would call it. Returns
/// whether every destination answered.
pub(super) async fn probe(config: &Config) -> bool {
    let fwd = &config.forward;
    if fwd.destinations.is_empty() {
        println!("# probe: no [forward] destinations configured");
        return true;
    }
    let calling = config.calling_ae_title();
    let mut all_ok = true;
    for d in &fwd.destinations {
        if d.url.is_some() {
            all_ok &= probe_web(d, fwd).await;
            continue;
        }
        match crate::route::forward::probe(d, &calling, fwd).await {
            Ok(took) => println!(
                "# probe {}: {} calling {} at {}: C-ECHO answered in {} ms",
                d.name,
                calling,
                d.ae_title,
                d.address,
                took.as_millis()
            ),
            Err(t) => {
                all_ok = false;
                println!(
                    "# probe {}: {} calling {} at {}: FAILED, {}\n#   hint: {}",
                    d.name,
                    calling,
                    d.ae_title,
                    d.address,
                    t.describe(),
                    t.hint(&d.name, &d.ae_title, &calling, &d.address)
                );
            }
        }
    }
    all_ok
}

/// A STOW-RS destination: a QIDO-RS search with the credentials and TLS settings forwarding
/// uses. Returns whether it answered.
async fn probe_web(
    d: &crate::route::forward::Destination,
    fwd: &crate::route::forward::ForwardOptions,
) -> bool {
    use crate::route::stow::StowClient;
    use crate::route::trouble::Trouble;
    let timeout = std::time::Duration::from_secs(fwd.connect_timeout_secs.max(1));
    let dest = d.clone();
    let answer = tokio::task::spawn_blocking(move || {
        StowClient::new(&dest, timeout)
            .map_err(|e| Trouble::Setup(e.to_string()))
            .and_then(|c| c.probe())
    })
    .await
    .unwrap_or_else(|e| Err(Trouble::RequestFailed(e.to_string())));
    match answer {
        Ok(took) => {
            println!(
                "# probe {}: DICOMweb at {}: answered in {} ms",
                d.name,
                d.target(),
                took.as_millis()
            );
            true
        }
        Err(t) => {
            println!(
                "# probe {}: DICOMweb at {}: FAILED, {}\n#   hint: {}",
                d.name,
                d.target(),
                t.describe(),
                t.hint(&d.name, "", "", d.target())
            );
            false
        }
    }
}
