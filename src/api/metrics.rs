//! `GET /metrics`: the daemon's counters and current gauges in the Prometheus text format.
//! Readable with an observe-scope token (or cookie), or with the static scraper token of
//! `metrics.token_file`, which reads nothing else.

use std::time::SystemTime;

use super::Parts;
use super::auth::Scope;
use super::error::{ApiError, ErrorCode};
use crate::metrics::{Gauges, render};
use crate::proto::http::{Request, Response};

/// Path of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// Answers `GET /metrics`.
pub fn scrape(
    parts: &Parts<'_>,
    caller: super::Caller,
    request: &Request,
) -> Result<Response, ApiError> {
    if !parts.ctx.config.metrics.enabled {
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
    let scraper = parts.api.metrics_token.as_deref().is_some_and(|expected| {
        super::auth::bearer_token(request.header("authorization"))
            .is_ok_and(|given| super::auth::constant_time_eq(given.as_bytes(), expected.as_bytes()))
    });
    if !scraper {
        super::authorize(parts, caller, request, Scope::Observe)?;
    }
    let body = render(
        &parts.ctx.metrics,
        parts.panes.output_counts(),
        &gauges(parts),
        parts.ctx.tmux.timing(),
        parts.tasks.store_timing(),
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

fn gauges(parts: &Parts<'_>) -> Gauges {
    let now = SystemTime::now();
    let idle_after = parts.ctx.config.sessions.idle_after;
    let mut gauges = Gauges {
        viewers: parts.api.observers as u64,
        uptime_seconds: parts.ctx.started.elapsed().as_secs(),
        screen_parsed_bytes: parts.panes.emulator_counts().0,
        screen_skimmed_bytes: parts.panes.emulator_counts().1,
        ..Gauges::default()
    };
    for agent in parts.agents.sorted() {
        let key = (
            agent.status(now, idle_after).as_str(),
            agent.activity.activity.as_str(),
        );
        *gauges.sessions.entry(key).or_default() += 1;
    }
    for ticket in parts.tasks.tickets() {
        *gauges.tickets.entry(ticket.status().as_str()).or_default() += 1;
    }
    gauges
}
