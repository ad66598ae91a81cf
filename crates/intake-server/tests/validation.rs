//! Bad input gets INVALID_ARGUMENT with a field violation naming the field,
//! and in a batch only the bad items fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::time::Duration;

use common::*;
use intake_proto::pb;
use tonic::Code;
use tonic_types::StatusExt;

fn violations(s: &tonic::Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_field_violation() {
    let c = TestCluster::start(1, fast_tuning()).await;
    c.wait_leader(Duration::from_secs(20)).await;
    let mut client = c.client(1).await;

    let good = complaint("v-good", "110105", "Loud music");
    let cases: Vec<(&str, pb::Complaint)> = vec![
        (
            "district_code",
            pb::Complaint {
                district_code: "999999".into(),
                ..good.clone()
            },
        ),
        (
            "text",
            pb::Complaint {
                text: String::new(),
                ..good.clone()
            },
        ),
        (
            "text",
            pb::Complaint {
                text: "x".repeat(20_000),
                ..good.clone()
            },
        ),
        (
            "idempotency_key",
            pb::Complaint {
                idempotency_key: String::new(),
                ..good.clone()
            },
        ),
        (
            "channel",
            pb::Complaint {
                channel: String::new(),
                ..good.clone()
            },
        ),
        (
            "category",
            pb::Complaint {
                category: String::new(),
                ..good.clone()
            },
        ),
        (
            "location.lat",
            pb::Complaint {
                location: Some(pb::Location {
                    lat: 123.0,
                    lon: 116.0,
                    address: String::new(),
                }),
                ..good.clone()
            },
        ),
        (
            "location.lon",
            pb::Complaint {
                location: Some(pb::Location {
                    lat: 39.0,
                    lon: f64::NAN,
                    address: String::new(),
                }),
                ..good.clone()
            },
        ),
        (
            "attachment_urls[0]",
            pb::Complaint {
                attachment_urls: vec!["file:///etc/passwd".into()],
                ..good.clone()
            },
        ),
    ];
    for (field, bad) in cases {
        let err = client
            .submit(pb::SubmitRequest { complaint: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            violations(&err).iter().any(|f| f == field),
            "{field}: got {:?}",
            violations(&err)
        );
    }
    let err = client
        .submit(pb::SubmitRequest { complaint: None })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["complaint".to_string()]);

    let err = client
        .get_ticket(pb::GetTicketRequest {
            ticket_id: "not-a-ticket".into(),
            local: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["ticket_id".to_string()]);

    // A batch: the bad items fail alone, the good ones are accepted.
    let batch = vec![
        complaint("b-1", "110101", "ok one"),
        complaint("b-2", "nowhere", "bad district"),
        complaint("b-3", "110102", "ok two"),
        complaint("b-4", "110102", ""),
    ];
    let resp = client
        .submit_batch(pb::SubmitBatchRequest { complaints: batch })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = resp
        .results
        .iter()
        .map(|r| match &r.outcome {
            Some(pb::submit_result::Outcome::Accepted(_)) => "ok",
            Some(pb::submit_result::Outcome::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.field_violations.len(), 1, "{e:?}");
                "bad"
            }
            None => "none",
        })
        .collect();
    assert_eq!(kinds, vec!["ok", "bad", "ok", "bad"]);

    // Nothing the bad input did lost the good tickets.
    for r in &resp.results {
        if let Some(pb::submit_result::Outcome::Accepted(ok)) = &r.outcome {
            assert!(get_local(&mut client, &ok.ticket_id).await.is_some());
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_reflection_of_the_public_api_only() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let c = TestCluster::start(1, fast_tuning()).await;
    c.wait_leader(Duration::from_secs(20)).await;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", c.addr(1)))
        .unwrap()
        .connect_lazy();

    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "intake.v1.IntakeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"intake.v1.IntakeService".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"intake.v1.AdminService".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("intake_internal")),
        "internal transport exposed: {names:?}"
    );
    c.shutdown().await;
}
