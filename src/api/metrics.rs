//! `GET /metrics`: the daemon's counters and current gauges in the Prometheus text format.
//! Readable with an observe-scope token (or cookie), or with the static scraper token of
//! `metrics.token_file`, which reads nothing else.

use std::time::SystemTime;

use super::auth::Scope;
use super::error::{ApiError, ErrorCode};
use crate::daemon::Daemon;
use crate::metrics::{Gauges, render};
use crate::proto::http::{Request, Response};

/// Path of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// Answers `GET /metrics`.
pub fn scrape(
    daemon: &Daemon,
    caller: super::Caller,
    request: &Request,
) -> Result<Response, ApiError> {
    if !daemon.ctx.config.metrics.enabled {
        return Err(ApiError::new(
            404,
            ErrorCode::NotFound,
            "metrics are switched off",
        ));
    }
    if request.method != "GET" {
        return Err(ApiError::new(
            405,
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on /metrics; use GET", request.method),
        )
        .with_header("Allow", "GET"));
    }
    let scraper = daemon.api.metrics_token.as_deref().is_some_and(|expected| {
        super::auth::bearer_token(request.header("authorization"))
            .is_ok_and(|given| super::auth::constant_time_eq(given.as_bytes(), expected.as_bytes()))
    });
    if !scraper {
        super::authorize(daemon, caller, request, Scope::Observe)?;
    }
    let body = render(
        &daemon.ctx.metrics,
        daemon.panes.output_counts(),
        &gauges(daemon),
        daemon.ctx.tmux.timing(),
        daemon.tasks.store_timing(),
    );
    Ok(Response {
        status: 200,
        headers: vec![(
            "Content-Type".into(),
            "text/plain; version=0.0.4; charset=utf-8".into(),
        )],
        body: body.into_bytes(),
    })
}

fn gauges(daemon: &Daemon) -> Gauges {
    let now = SystemTime::now();
    let idle_after = daemon.ctx.config.sessions.idle_after;
    let mut gauges = Gauges {
        viewers: daemon.api.observers as u64,
        uptime_seconds: daemon.ctx.started.elapsed().as_secs(),
        ..Gauges::default()
    };
    for agent in daemon.agents.sorted() {
        let key = (
            agent.status(now, idle_after).as_str(),
            agent.activity.activity.as_str(),
        );
        *gauges.sessions.entry(key).or_default() += 1;
    }
    for ticket in daemon.tasks.tickets() {
        *gauges.tickets.entry(ticket.status().as_str()).or_default() += 1;
    }
    gauges
}
