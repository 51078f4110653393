//! Every gRPC server answers grpc.health.v1.Health and server reflection, v1
//! and v1alpha, so grpcurl works with no .proto files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use rig::*;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

async fn connect(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap()
}

async fn list_v1(channel: Channel) -> Vec<String> {
    use v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = v1::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn list_v1alpha(channel: Channel) -> Vec<String> {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The descriptor of `symbol` via v1alpha (what grpcurl `describe` asks).
async fn describes(channel: Channel, symbol: &str) -> bool {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    };
    let mut answers = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    matches!(
        answers.next().await.unwrap().unwrap().message_response,
        Some(MessageResponse::FileDescriptorResponse(f)) if !f.file_descriptor_proto.is_empty()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_health_and_both_reflection_versions() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    for (url, own) in [
        (&stack.event_grpc, Some("ticketmesh.v1.EventService")),
        (&stack.storage_grpc, Some("ticketmesh.v1.StorageService")),
        (&stack.notifier_grpc, Some("ticketmesh.v1.NotifierService")),
    ] {
        let channel = connect(url).await;
        let overall = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(overall.status, 1, "{url}: overall SERVING");
        if let Some(own) = own {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest { service: own.into() })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, 1, "{url}: {own} SERVING");
        }
        // Each lists exactly what it serves: its own service, health, reflection.
        for mut services in [list_v1(channel.clone()).await, list_v1alpha(channel.clone()).await] {
            services.sort();
            let mut expected = vec![
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                own.unwrap(),
            ];
            expected.sort_unstable();
            assert_eq!(services, expected, "{url}");
        }
        assert!(describes(channel.clone(), "ticketmesh.v1.StorageService").await, "{url}");
        assert!(describes(channel.clone(), "grpc.health.v1.Health").await, "{url}");
        assert!(describes(channel, "ticketmesh.v1.TicketEvent").await, "{url}");
    }
    // Every admin port, the gateway's included, answers /health and /ready.
    for admin in [&stack.gateway_admin, &stack.event_admin, &stack.storage_admin, &stack.notifier_admin] {
        for path in ["/health", "/ready"] {
            let status = reqwest::get(format!("{admin}{path}")).await.unwrap().status();
            assert_eq!(status, 200, "{admin}{path}");
        }
    }
    stack.stop().await;
    backend.drop_database().await;
}
