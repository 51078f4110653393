//! The stored tickets and the business figures, from the storage service.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
};
use serde::Deserialize;
use serde_json::{Value, json};
use ticketmesh_proto::v1::{GetTicketRequest, ListTicketsRequest};

use crate::{error::AppError, render, state::AppState};

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    category: Option<String>,
    #[serde(rename = "type")]
    ticket_type: Option<String>,
    event_id: Option<i64>,
    page_size: Option<i32>,
    page_token: Option<String>,
}

pub(super) async fn list_tickets(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(p) = params.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let request = ListTicketsRequest {
        page_size: p.page_size.unwrap_or(0),
        page_token: p.page_token.unwrap_or_default(),
        category: p.category.unwrap_or_default(),
        r#type: p.ticket_type.unwrap_or_default(),
        event_id: p.event_id,
    };
    if !(0..=500).contains(&request.page_size) {
        return Err(AppError::bad_request("invalid_query", "page_size must be between 1 and 500"));
    }
    let page = state.storage().list_tickets(request).await?;
    Ok(Json(json!({
        "tickets": page.tickets.iter().map(render::ticket).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    })))
}

pub(super) async fn get_ticket(
    State(state): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<Value>, AppError> {
    let ticket = state.storage().get_ticket(GetTicketRequest { number }).await?;
    Ok(Json(render::ticket(&ticket)))
}

pub(super) async fn stats(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let stats = state.storage().get_stats().await?;
    Ok(Json(render::stats(&stats)))
}
