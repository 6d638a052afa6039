//! Prompt-cache-aware sticky routing through the real binary: a conversation stays on one
//! target of a round-robin model for 50 turns while other conversations spread, a client-named
//! session sticks whatever it says, the conversation moves when its target goes unhealthy and
//! stays where it moved, and a model whose targets' cached input costs no less is not sticky.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use support::{client, metric_value as metric, Gateway, MockResponse, MockUpstream};

async fn named(name: &'static str, broken: Arc<AtomicBool>) -> MockUpstream {
    MockUpstream::start(move |_, _| {
        if broken.load(Ordering::SeqCst) {
            return MockResponse::json(
                500,
                json!({"error": {"message": "down", "type": "server_error"}}),
            );
        }
        MockResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {name}")},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        )
    })
    .await
}

fn config(upstreams: &[(&str, &MockUpstream)]) -> String {
    let mut providers = String::new();
    for (name, upstream) in upstreams {
        providers.push_str(&format!(
            "  {name}: {{ kind: openai-compatible, base_url: \"{}/v1\", api_key: k, health_check: {{ enabled: false }}, circuit_breaker: {{ failure_threshold: 2 }} }}\n",
            upstream.url()
        ));
    }
    let targets = |cached: &str| {
        upstreams
            .iter()
            .map(|(name, _)| {
                format!("{{ provider: {name}, model: m, price: {{ input_per_mtok: 3, output_per_mtok: 15{cached} }} }}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
{providers}models:
  sticky:
    strategy: round_robin
    targets: [{}]
    sticky: {{ ttl_s: 600 }}
  spread:
    strategy: round_robin
    targets: [{}]
    sticky: {{ ttl_s: 600 }}
"#,
        targets(", cached_input_per_mtok: 0.3"),
        targets(""),
    )
}

/// Asks `model` with `messages`; the provider that answered.
async fn turn(gw: &Gateway, model: &str, messages: &[Value], session: Option<&str>) -> String {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": model, "messages": messages}));
    if let Some(session) = session {
        req = req.header("x-session-id", session);
    }
    let resp = req.send().await.expect("gateway answers");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-switchyard-provider"]
        .to_str()
        .unwrap()
        .to_string()
}

fn conversation(topic: &str) -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "You are a helpful assistant."}),
        json!({"role": "user", "content": format!("Let us talk about {topic}.")}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_stick_to_their_target_and_move_when_it_fails() {
    let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let a = named("a", flags[0].clone()).await;
    let b = named("b", flags[1].clone()).await;
    let c = named("c", flags[2].clone()).await;
    let gw = Gateway::start(&config(&[("a", &a), ("b", &b), ("c", &c)])).await;

    // Fifty turns of one conversation, each repeating the earlier ones: one target.
    let mut messages = conversation("rivers");
    let mut answered_by = BTreeSet::new();
    for i in 0..50 {
        let provider = turn(&gw, "sticky", &messages, None).await;
        answered_by.insert(provider.clone());
        messages.push(json!({"role": "assistant", "content": format!("from {provider}")}));
        messages.push(json!({"role": "user", "content": format!("And then? ({i})")}));
    }
    assert_eq!(answered_by.len(), 1, "{answered_by:?}");
    let home = answered_by.into_iter().next().unwrap();

    // Other conversations still spread over the targets.
    let mut others = BTreeSet::new();
    for topic in ["lakes", "seas", "clouds", "rain", "snow", "ice"] {
        others.insert(turn(&gw, "sticky", &conversation(topic), None).await);
    }
    assert!(others.len() > 1, "{others:?}");

    // A session the client names sticks whatever its messages say.
    let first = turn(&gw, "sticky", &conversation("one thing"), Some("s-1")).await;
    for topic in ["another", "a third", "a fourth"] {
        assert_eq!(
            turn(&gw, "sticky", &conversation(topic), Some("s-1")).await,
            first
        );
    }

    // The conversation's target fails: its requests fail over, its breaker opens, and the
    // conversation moves to a healthy target and stays there.
    let index = ["a", "b", "c"].iter().position(|n| *n == home).unwrap();
    flags[index].store(true, Ordering::SeqCst);
    let mut after = Vec::new();
    for i in 0..12 {
        after.push(turn(&gw, "sticky", &messages, None).await);
        messages.push(json!({"role": "user", "content": format!("Still there? ({i})")}));
    }
    assert!(after.iter().all(|p| *p != home), "{after:?}");
    let settled: BTreeSet<&String> = after[2..].iter().collect();
    assert_eq!(settled.len(), 1, "it moved once and stayed: {after:?}");

    let metrics = gw.metrics().await;
    let count = |result: &str| {
        metric(
            &metrics,
            &format!("switchyard_sticky_routes_total{{model=\"sticky\",result=\"{result}\"}}"),
        )
    };
    assert!(count("kept") >= 49.0 + 3.0, "{metrics}");
    assert!(count("assigned") >= 8.0, "{metrics}");
    assert!(count("moved") >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cheaper_cached_price_the_strategy_spreads_every_turn() {
    let a = named("a", Arc::default()).await;
    let b = named("b", Arc::default()).await;
    let gw = Gateway::start(&config(&[("a", &a), ("b", &b)])).await;
    assert!(
        gw.logs().contains("models.spread.sticky: ignored"),
        "the config says so: {}",
        gw.logs()
    );
    let messages = conversation("rivers");
    let mut answered_by = BTreeSet::new();
    for _ in 0..4 {
        answered_by.insert(turn(&gw, "spread", &messages, None).await);
    }
    assert_eq!(answered_by.len(), 2, "{answered_by:?}");
}
